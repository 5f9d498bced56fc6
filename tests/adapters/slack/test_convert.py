"""The Slack channel's pure conversions: events, button presses and slash commands to inbound
events (``normalize``) and response elements to Block Kit messages (``render``). Payloads come
from the builders of ``tests.fakes.slack``, which mirror Slack's; rendered blocks are checked with
its ``validate_blocks``. No network, no clock."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.slack.normalize import (
    BotIdentity,
    Ignored,
    ThreadReply,
    action_to_inbound,
    command_to_inbound,
    event_to_inbound,
    pressed_message,
    pressed_title,
    strip_mentions,
    thread_key,
    to_plain,
)
from adapters.slack.render import (
    MAX_ACTIONS,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_FALLBACK_TEXT,
    MAX_SECTION_TEXT,
    NATIVE_FALLBACK,
    RenderOptions,
    SlackMessage,
    escape_mrkdwn,
    pressed_blocks,
    render,
    split_text,
    units,
)
from bridge.channel import Inbound, InboundKind
from bridge.textchat.models import ResponseElement, parse_element
from tests.fakes.slack import (
    app_mention,
    block_actions_payload,
    bot_message,
    channel_join_message,
    channel_message,
    dm_message,
    event_callback,
    file_share,
    member_joined_channel,
    message_changed,
    message_deleted,
    slack_file,
    slash_command,
    validate_blocks,
)

FAST = settings(derandomize=True, max_examples=150, deadline=None, database=None)

TEAM = "T0TEAM"
BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id=TEAM)
ADA = "U0ADA"
BOB = "U0BOB"
DM = "D0DM"
CHAN = "C0CHAN"


def normalize(event: dict[str, Any]) -> Inbound | ThreadReply | Ignored:
    """The event as it arrives inside an Events API envelope."""
    return event_to_inbound(event_callback(TEAM, event)["event"], TEAM, BOT)


def inbound(event: dict[str, Any]) -> Inbound:
    result = normalize(event)
    assert isinstance(result, Inbound), result
    return result


def ignored(result: object) -> str:
    assert isinstance(result, Ignored), result
    return result.reason


def accepted(result: Inbound | Ignored) -> Inbound:
    """A press or a slash command that made an event."""
    assert isinstance(result, Inbound), result
    return result


def address(channel: str, thread_ts: str | None = None) -> dict[str, str | None]:
    """Where an answer goes: the workspace, the channel, the thread (None: top level)."""
    return {"team_id": TEAM, "channel": channel, "thread_ts": thread_ts}


def context(channel_type: str, user: str = ADA) -> dict[str, str]:
    """What every event tells Parloa about its sender."""
    return {"platform": "slack", "teamId": TEAM, "channelType": channel_type, "userId": user}


# --- normalize: direct messages -------------------------------------------------------------


def test_dm_is_one_conversation_answered_in_the_dm() -> None:
    event = inbound(dm_message(ADA, "Hello there", DM, ts="1700000000.000100"))
    assert event == Inbound(
        event_id=f"{TEAM}:{DM}:1700000000.000100",
        conversation_key=f"{TEAM}:{DM}",
        user_id=ADA,
        kind=InboundKind.TEXT,
        text="Hello there",
        address=address(DM),
        context=context("im"),
    )


def test_dm_thread_reply_stays_in_the_dm_conversation() -> None:
    event = inbound(dm_message(ADA, "again", DM, thread_ts="1700000000.000100"))
    assert event.conversation_key == f"{TEAM}:{DM}"
    assert event.address["thread_ts"] is None


def test_retries_of_one_event_normalise_identically() -> None:
    raw = dm_message(ADA, "hi", DM)
    assert normalize(raw) == normalize(copy.deepcopy(raw))


def test_dm_mention_of_the_bot_is_stripped() -> None:
    assert inbound(dm_message(ADA, "<@U0BOT> what's up?", DM)).text == "what's up?"


def test_empty_dm_is_ignored() -> None:
    assert ignored(normalize(dm_message(ADA, "   ", DM))) == "empty message"
    assert ignored(normalize(dm_message(ADA, "<@U0BOT>", DM))) == "empty message"


# --- normalize: mentions and threads --------------------------------------------------------


def test_mention_opens_a_conversation_in_its_thread() -> None:
    ts = "1700000001.000200"
    event = inbound(app_mention(ADA, "book a table", CHAN, ts, bot_user_id="U0BOT"))
    assert event.event_id == f"{TEAM}:{CHAN}:{ts}"
    assert event.conversation_key == thread_key(TEAM, CHAN, ts) == f"{TEAM}:{CHAN}:{ts}"
    assert event.address == address(CHAN, ts)
    assert event.kind is InboundKind.TEXT
    assert event.text == "book a table"
    assert event.context == context("channel")


def test_mention_inside_a_thread_belongs_to_that_thread() -> None:
    parent = "1700000001.000200"
    event = inbound(app_mention(ADA, "<@U0BOT> more", CHAN, "1700000002.000300", thread_ts=parent))
    assert event.conversation_key == thread_key(TEAM, CHAN, parent)
    assert event.address["thread_ts"] == parent
    assert event.event_id == f"{TEAM}:{CHAN}:1700000002.000300"


def test_mention_and_message_of_one_post_share_the_dedup_key() -> None:
    ts = "1700000003.000400"
    mention = normalize(app_mention(ADA, "<@U0BOT> hi", CHAN, ts))
    message = normalize(channel_message(ADA, "<@U0BOT> hi", CHAN, ts))
    assert isinstance(mention, Inbound)
    assert ignored(message) == "handled as app_mention"
    # Slack gives the two events different event ids; the key is (team, channel, ts).
    thread_mention = normalize(app_mention(ADA, "<@U0BOT> hi", CHAN, ts, thread_ts="1.0"))
    thread_message = normalize(channel_message(ADA, "<@U0BOT> hi", CHAN, ts, thread_ts="1.0"))
    assert isinstance(thread_mention, Inbound)
    assert thread_mention.event_id == mention.event_id == f"{TEAM}:{CHAN}:{ts}"
    assert ignored(thread_message) == "handled as app_mention"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@U0BOT> hello", "hello"),
        ("<@U0BOT|ourbot> hello", "hello"),
        ("hello <@U0BOT>", "hello"),
        ("<@U0BOT>: hello", "hello"),
        ("<@U0BOT>, hello", "hello"),
        ("hi <@U0BOT>, there", "hi, there"),
        ("hi <@U0BOT> there", "hi there"),
        ("  <@U0BOT>   spaced out  ", "spaced out"),
        ("<@U0BOT> <@U0BOT> twice", "twice"),
        ("line one\n<@U0BOT> line two", "line one\nline two"),
        ("ask <@U0BOB> too", "ask <@U0BOB> too"),
    ],
)
def test_bot_mentions_are_removed(text: str, expected: str) -> None:
    assert strip_mentions(text, "U0BOT") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fish &amp; chips", "fish & chips"),
        ("1 &lt; 2 &gt; 0", "1 < 2 > 0"),
        ("&amp;lt;", "&lt;"),
        ("see <https://example.com|example.com>", "see example.com"),
        ("see <https://example.com>", "see https://example.com"),
        ("see <https://example.com/a|the docs>", "see the docs (https://example.com/a)"),
        ("mail <mailto:a@b.org|a@b.org>", "mail a@b.org"),
        ("ask <@U0BOB|bob>", "ask @bob"),
        ("ask <@U0BOB>", "ask @U0BOB"),
        ("in <#C0GEN|general>", "in #general"),
        ("<!here> listen", "@here listen"),
        ("<!subteam^S0TEAM|@devs> ping", "@devs ping"),
        ("<!date^1700000000^{date}|Nov 14> ok", "Nov 14 ok"),
    ],
)
def test_slack_markup_becomes_plain_text(text: str, expected: str) -> None:
    assert to_plain(text) == expected


def test_mention_text_is_made_plain() -> None:
    event = inbound(app_mention(ADA, "<@U0BOT> fish &amp; chips for <@U0BOB|bob>", CHAN))
    assert event.text == "fish & chips for @bob"


def test_bare_mention_starts_but_not_inside_a_thread() -> None:
    event = inbound(app_mention(ADA, "<@U0BOT>", CHAN))
    assert (event.kind, event.text) == (InboundKind.START, "")
    threaded = normalize(app_mention(ADA, "<@U0BOT> ", CHAN, thread_ts="1700000000.000001"))
    assert ignored(threaded) == "empty mention in a thread"


def test_mention_in_a_dm_channel_is_left_to_the_message_event() -> None:
    assert "handled as message" in ignored(normalize(app_mention(ADA, "<@U0BOT> hi", DM)))


@pytest.mark.parametrize("channel_type", ["channel", "group", "mpim"])
def test_thread_reply_without_mention_is_a_thread_reply(channel_type: str) -> None:
    parent = "1700000010.000100"
    raw = channel_message(
        BOB,
        "the 7th please",
        CHAN,
        "1700000011.000100",
        thread_ts=parent,
        channel_type=channel_type,
    )
    result = normalize(raw)
    assert isinstance(result, ThreadReply)
    assert result.thread_key == thread_key(TEAM, CHAN, parent)
    assert result.inbound.conversation_key == result.thread_key
    assert result.inbound.event_id == f"{TEAM}:{CHAN}:1700000011.000100"
    assert result.inbound.address == address(CHAN, parent)
    assert result.inbound.user_id == BOB
    assert (result.inbound.kind, result.inbound.text) == (InboundKind.TEXT, "the 7th please")
    assert result.inbound.context["channelType"] == channel_type


def test_mention_thread_and_reply_share_the_conversation() -> None:
    mention = inbound(app_mention(ADA, "<@U0BOT> hi", CHAN, "1700000020.000100"))
    reply = normalize(channel_message(ADA, "more", CHAN, thread_ts="1700000020.000100"))
    assert isinstance(reply, ThreadReply)
    assert reply.thread_key == mention.conversation_key


def test_channel_chatter_outside_threads_is_ignored() -> None:
    assert "not addressed" in ignored(normalize(channel_message(ADA, "lunch?", CHAN)))
    # A thread's parent echoes thread_ts == ts: it is no reply.
    parent = channel_message(ADA, "lunch?", CHAN, "1.5", thread_ts="1.5")
    assert "not addressed" in ignored(normalize(parent))


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(bot_message("beep", CHAN), id="legacy bot_message"),
        pytest.param(
            bot_message("beep", DM, channel_type="im", legacy_subtype=False, user="U0OTHER"),
            id="app bot_id",
        ),
        pytest.param(
            bot_message(
                "our echo",
                DM,
                channel_type="im",
                legacy_subtype=False,
                user="U0BOT",
                bot_id="B0BOT",
            ),
            id="our own echo",
        ),
        pytest.param(dm_message("U0BOT", "from ourselves", DM), id="own user"),
    ],
)
def test_bots_and_ourselves_are_ignored(event: dict[str, Any]) -> None:
    reason = ignored(normalize(event))
    assert "bot" in reason


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            message_changed(DM, {"user": ADA, "text": "edited", "ts": "1.1"}, channel_type="im"),
            id="edit",
        ),
        pytest.param(message_deleted(DM, "1.1", channel_type="im"), id="delete"),
        pytest.param(channel_join_message(ADA, CHAN), id="channel_join"),
        pytest.param(
            {**channel_message(ADA, "left", CHAN), "subtype": "channel_leave"}, id="leave"
        ),
        pytest.param({**dm_message(ADA, "x", DM), "subtype": "message_replied"}, id="replied"),
        pytest.param({**dm_message(ADA, "topic", DM), "subtype": "channel_topic"}, id="topic"),
        pytest.param(
            {**channel_message(ADA, "also", CHAN, thread_ts="1.0"), "subtype": "thread_broadcast"},
            id="thread_broadcast",
        ),
        pytest.param({**dm_message(ADA, "pinned", DM), "subtype": "pinned_item"}, id="pinned"),
    ],
)
def test_edits_deletions_and_service_messages_are_ignored(event: dict[str, Any]) -> None:
    reason = ignored(normalize(event))
    assert "subtype" in reason or "hidden" in reason


def test_hidden_messages_are_ignored() -> None:
    assert ignored(normalize({**dm_message(ADA, "x", DM), "hidden": True})) == "hidden message"


@pytest.mark.parametrize(
    "event",
    [
        member_joined_channel(ADA, CHAN),
        {"type": "member_left_channel", "user": ADA, "channel": CHAN},
        {"type": "app_home_opened", "user": ADA, "channel": DM, "tab": "home"},
        {"type": "reaction_added", "user": ADA, "reaction": "tada"},
    ],
)
def test_other_event_types_are_ignored(event: dict[str, Any]) -> None:
    assert "is not handled" in ignored(normalize(event))


def test_file_share_with_text_is_the_text_and_the_file() -> None:
    event = inbound(file_share(ADA, "here is the invoice", [slack_file(file_id="F0INV")], DM))
    assert (event.kind, event.text) == (InboundKind.TEXT, "here is the invoice")
    assert [a.locator for a in event.attachments] == [f"{TEAM}:F0INV"]


def test_file_share_without_text_is_a_text_event_with_the_file() -> None:
    event = inbound(file_share(ADA, "", [slack_file("photo.png", mimetype="image/png")], DM))
    assert (event.kind, event.text, len(event.attachments)) == (InboundKind.TEXT, "", 1)
    assert event.conversation_key == f"{TEAM}:{DM}"


def test_file_share_in_a_thread_is_a_thread_reply() -> None:
    raw = file_share(ADA, "", [slack_file()], CHAN, channel_type="channel", thread_ts="1.0")
    result = normalize(raw)
    assert isinstance(result, ThreadReply)
    assert (result.inbound.kind, result.inbound.text) == (InboundKind.TEXT, "")
    assert len(result.inbound.attachments) == 1


def test_files_without_the_subtype_count_as_a_file() -> None:
    raw = {**dm_message(ADA, "", DM), "files": [slack_file()]}
    assert len(inbound(raw).attachments) == 1


def test_only_deleted_files_are_unsupported() -> None:
    raw = file_share(ADA, "", [{"id": "F0GONE", "mode": "tombstone"}], DM)
    assert (inbound(raw).kind, inbound(raw).text) == (InboundKind.UNSUPPORTED, "file")


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(None, id="none"),
        pytest.param([], id="list"),
        pytest.param("message", id="string"),
        pytest.param(
            {"type": "message", "channel_type": "im", "user": ADA, "ts": "1.1"}, id="no channel"
        ),
        pytest.param({"type": "message", "channel": DM, "user": ADA, "ts": 1.1}, id="number ts"),
        pytest.param({"type": "message", "channel": DM, "ts": "1.1", "text": "x"}, id="no user"),
        pytest.param({**dm_message(ADA, "x", DM), "text": 5}, id="text not a string"),
        pytest.param({**dm_message(ADA, "x", DM), "thread_ts": 5}, id="thread_ts not a string"),
        pytest.param({"type": "app_mention", "user": ADA, "text": "hi"}, id="mention no channel"),
        pytest.param({**dm_message(ADA, "x", DM), "channel": {"id": DM}}, id="channel object"),
    ],
)
def test_malformed_events_are_ignored(event: Any) -> None:
    assert ignored(event_to_inbound(event, TEAM, BOT)).startswith("malformed")


# --- normalize: block actions ---------------------------------------------------------------


def test_press_in_a_thread_is_a_button_of_that_thread() -> None:
    body = block_actions_payload(
        ADA, CHAN, "1700000030.000200", "chip_1", "Tomorrow", thread_ts="1700000030.000100"
    )
    event = action_to_inbound(body, BOT)
    assert event == Inbound(
        event_id=f"act:{TEAM}:{CHAN}:1700000030.000200",
        conversation_key=thread_key(TEAM, CHAN, "1700000030.000100"),
        user_id=ADA,
        kind=InboundKind.BUTTON,
        text="Tomorrow",
        address=address(CHAN, "1700000030.000100"),
        context=context("channel"),
    )
    assert pressed_message(body) == (CHAN, "1700000030.000200")


def test_press_in_a_dm_belongs_to_the_dm() -> None:
    event = accepted(
        action_to_inbound(block_actions_payload(ADA, DM, "1700000031.000100", "chip_0", "yes"), BOT)
    )
    assert event.conversation_key == f"{TEAM}:{DM}"
    assert event.address == address(DM)
    assert event.context["channelType"] == "im"


def test_press_on_a_top_level_channel_message_is_the_pressers_command_conversation() -> None:
    body = block_actions_payload(BOB, CHAN, "1700000032.000100", "chip_0", "yes")
    event = accepted(action_to_inbound(body, BOT))
    assert event.conversation_key == f"{TEAM}:{CHAN}:cmd:{BOB}"
    assert event.address == address(CHAN)


def test_any_second_press_on_one_message_is_a_duplicate() -> None:
    first = action_to_inbound(block_actions_payload(ADA, DM, "1.5", "chip_0", "a"), BOT)
    again = action_to_inbound(block_actions_payload(ADA, DM, "1.5", "chip_3", "d"), BOT)
    other = action_to_inbound(block_actions_payload(ADA, DM, "1.6", "chip_0", "a"), BOT)
    assert isinstance(first, Inbound) and isinstance(again, Inbound) and isinstance(other, Inbound)
    assert first.event_id == again.event_id == f"act:{TEAM}:{DM}:1.5"
    assert other.event_id != first.event_id


def test_pressed_title_is_the_buttons_text() -> None:
    body = block_actions_payload(ADA, DM, "1.5", "chip_0", "v", button_text="Yes please")
    assert pressed_title(body) == "Yes please"
    assert pressed_title({"actions": "nope"}) is None


def test_first_chip_action_wins_and_others_are_ignored() -> None:
    body = block_actions_payload(ADA, DM, "1.5", "chip_2", "two")
    body["actions"].insert(0, {"action_id": "native_x", "value": "x", "type": "button"})
    event = action_to_inbound(body, BOT)
    assert isinstance(event, Inbound) and event.text == "two"
    foreign = block_actions_payload(ADA, DM, "1.5", "approve", "ok")
    assert ignored(action_to_inbound(foreign, BOT)) == "no chip pressed"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b.pop("user"), id="no user"),
        pytest.param(lambda b: b.update(user="U0ADA"), id="user not an object"),
        pytest.param(lambda b: (b.pop("container"), b.pop("channel")), id="no channel"),
        pytest.param(lambda b: (b.pop("container"), b.pop("message")), id="no message ts"),
        pytest.param(lambda b: b["actions"][0].update(value=None), id="no value"),
        pytest.param(lambda b: b["container"].update(thread_ts=7), id="thread_ts number"),
    ],
)
def test_malformed_presses_are_ignored(mutate: Any) -> None:
    body = block_actions_payload(ADA, CHAN, "1.5", "chip_0", "v", thread_ts="1.0")
    mutate(body)
    assert ignored(action_to_inbound(body, BOT)).startswith("malformed")


def test_odd_interactions_are_ignored() -> None:
    assert ignored(action_to_inbound(None, BOT)).startswith("malformed")  # type: ignore[arg-type]
    assert "not handled" in ignored(action_to_inbound({"type": "view_submission"}, BOT))
    assert pressed_message({"container": {}}) is None
    assert pressed_message(None) is None  # type: ignore[arg-type]


# --- normalize: slash commands --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", InboundKind.START),
        ("start", InboundKind.START),
        ("  Start ", InboundKind.START),
        ("stop", InboundKind.STOP),
        ("quit", InboundKind.STOP),
        ("STOP", InboundKind.STOP),
        ("restart", InboundKind.RESTART),
    ],
)
def test_slash_command_control_words(text: str, kind: InboundKind) -> None:
    body = slash_command("/parloa", text, user_id=ADA, channel_id=DM)
    event = accepted(command_to_inbound(body, BOT))
    assert (event.kind, event.text) == (kind, "")


@pytest.mark.parametrize(
    ("text", "forwarded"),
    [("book a table for two", "book a table for two"), ("fish &amp; chips", "fish & chips")],
)
def test_slash_command_text_is_forwarded(text: str, forwarded: str) -> None:
    body = slash_command("/parloa", text, user_id=ADA, channel_id=DM)
    event = accepted(command_to_inbound(body, BOT))
    assert (event.kind, event.text) == (InboundKind.TEXT, forwarded)


def test_slash_command_in_a_dm_is_the_dm_conversation() -> None:
    body = slash_command("/parloa", "hi", user_id=ADA, channel_id=DM, channel_name="directmessage")
    event = accepted(command_to_inbound(body, BOT))
    assert event.event_id == f"cmd:{TEAM}:{body['trigger_id']}"
    assert event.conversation_key == f"{TEAM}:{DM}"
    assert event.address == address(DM)
    assert event.context == context("im")


def test_slash_command_in_a_channel_is_the_users_own_conversation() -> None:
    ada = command_to_inbound(slash_command("/parloa", "hi", user_id=ADA, channel_id=CHAN), BOT)
    bob = command_to_inbound(slash_command("/parloa", "hi", user_id=BOB, channel_id=CHAN), BOT)
    assert isinstance(ada, Inbound) and isinstance(bob, Inbound)
    assert ada.conversation_key == f"{TEAM}:{CHAN}:cmd:{ADA}"
    assert bob.conversation_key == f"{TEAM}:{CHAN}:cmd:{BOB}"
    assert ada.address == address(CHAN)
    assert ada.event_id != bob.event_id


def test_slash_command_channel_types() -> None:
    mpim = slash_command("/parloa", "hi", channel_id="G0MP", channel_name="mpdm-ada--bob-1")
    group = slash_command("/parloa", "hi", channel_id="G0PRIV", channel_name="secret")
    for body, expected in ((mpim, "mpim"), (group, "group")):
        event = command_to_inbound(body, BOT)
        assert isinstance(event, Inbound) and event.context["channelType"] == expected


@pytest.mark.parametrize("field", ["user_id", "channel_id", "trigger_id"])
def test_malformed_slash_commands_are_ignored(field: str) -> None:
    body: dict[str, Any] = dict(slash_command("/parloa", "hi"))
    del body[field]
    assert ignored(command_to_inbound(body, BOT)).startswith("malformed")
    assert ignored(command_to_inbound({**body, "text": 3}, BOT)).startswith("malformed")
    assert ignored(command_to_inbound("x", BOT)).startswith("malformed")  # type: ignore[arg-type]


# --- render helpers -------------------------------------------------------------------------

OPTIONS = RenderOptions()


def el(raw: dict[str, Any]) -> ResponseElement:
    return parse_element(raw)


def text(content: str) -> ResponseElement:
    return el({"type": "text", "content": content})


def chips(*values: Any) -> ResponseElement:
    return el({"type": "payload", "content": {"suggestionChips": list(values)}})


def check(messages: list[SlackMessage]) -> list[SlackMessage]:
    """Every message is one Slack accepts: valid blocks, 1..50 of them, a short fallback."""
    for message in messages:
        assert validate_blocks(list(message.blocks)) == [], message
        assert 1 <= len(message.blocks) <= MAX_BLOCKS
        assert message.text.strip()
        assert units(message.text) <= MAX_FALLBACK_TEXT
        for block in message.blocks:
            if block["type"] == "section":
                assert units(block["text"]["text"]) <= MAX_SECTION_TEXT
    return messages


def sections(message: SlackMessage) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b["type"] == "section"]


def buttons(message: SlackMessage) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


_ENTITY_CUT = re.compile(r"&(?!amp;|lt;|gt;)")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- render: texts --------------------------------------------------------------------------


def test_escape_mrkdwn_escapes_only_the_three() -> None:
    assert escape_mrkdwn("a & b <script>*x*_y_`z`") == "a &amp; b &lt;script&gt;*x*_y_`z`"
    assert escape_mrkdwn("&amp;") == "&amp;amp;"


def test_short_text_is_one_escaped_section() -> None:
    [message] = check(render([text("Hi <b>Ada</b> & *welcome*")], OPTIONS))
    assert message.blocks == (
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; *welcome*"},
        },
    )
    assert message.text == "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; *welcome*"


def test_texts_of_one_delivery_share_a_message() -> None:
    [message] = check(render([text("one"), text("two")], OPTIONS))
    assert sections(message) == ["one", "two"]
    assert message.text == "one\n\ntwo"


def test_empty_and_unknown_elements_render_nothing() -> None:
    unknown = el({"type": "video", "url": "https://x.org/v.mp4"})
    broken = el({"type": "text"})
    assert render([text(""), text("  \n "), unknown, broken], OPTIONS) == []
    assert render([], OPTIONS) == []


def test_long_text_is_split_at_paragraphs_into_sections() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 300 for i in range(8)]
    source = "\n\n".join(p.strip() for p in paragraphs)
    [message] = check(render([text(source)], OPTIONS))
    parts = sections(message)
    assert len(parts) > 1
    assert all(units(p) <= MAX_SECTION_TEXT for p in parts)
    assert all(p.startswith("Paragraph ") for p in parts)  # cut at paragraph breaks
    assert "".join(parts).replace(" ", "") == source.replace(" ", "").replace("\n", "")


def test_escaping_never_pushes_a_section_over_the_limit() -> None:
    source = "&" * 4000 + "<>" * 1000
    [message] = check(render([text(source)], OPTIONS))
    parts = sections(message)
    assert all(units(p) <= MAX_SECTION_TEXT for p in parts)
    assert all(re.fullmatch(r"(?:&amp;|&lt;|&gt;)+", p) for p in parts)  # no entity cut
    assert unescape("".join(parts)) == source


def test_split_never_cuts_inside_an_entity_at_the_limit() -> None:
    # The 3000th unit falls inside "&amp;": the chunk must end before the "&".
    source = "x" * 2998 + "&" + "y" * 10
    chunks = split_text(source, MAX_SECTION_TEXT)
    assert [units(escape_mrkdwn(c)) for c in chunks] == [2998, 15]
    [message] = check(render([text(source)], OPTIONS))
    assert sections(message) == ["x" * 2998, "&amp;" + "y" * 10]


def test_emoji_count_two_units() -> None:
    source = "🎉" * 2000
    [message] = check(render([text(source)], OPTIONS))
    assert [len(p) for p in sections(message)] == [1500, 500]


def test_more_than_fifty_blocks_make_a_second_message() -> None:
    source = "\n\n".join(f"{i:02d} " + "x" * 2900 for i in range(60))
    messages = check(render([text(source)], OPTIONS))
    assert [len(m.blocks) for m in messages] == [50, 10]
    assert sections(messages[0])[0].startswith("00 ") and sections(messages[1])[0].startswith("50 ")
    assert messages[0].text.endswith("…")
    assert messages[1].text.startswith("50 ")


def test_fallback_text_is_cut_without_breaking_an_entity() -> None:
    messages = check(render([text("&" * 2000), text("&" * 2000)], OPTIONS))
    assert messages[0].text.endswith("…")
    assert not _ENTITY_CUT.search(messages[0].text.removesuffix("…"))


# --- render: chips --------------------------------------------------------------------------


def test_chips_follow_the_text_in_its_message() -> None:
    [message] = check(render([text("Which day?"), chips("Today", "Tomorrow")], OPTIONS))
    assert [b["type"] for b in message.blocks] == ["section", "actions"]
    assert buttons(message) == [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Today", "emoji": True},
            "value": "Today",
            "action_id": "chip_0",
        },
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Tomorrow", "emoji": True},
            "value": "Tomorrow",
            "action_id": "chip_1",
        },
    ]
    assert message.text == "Which day?"


def test_chips_alone_get_the_prompt() -> None:
    options = RenderOptions(chips_prompt="Pick <one> & go")
    [message] = check(render([chips({"title": "Yes", "value": "yes"})], options))
    assert sections(message) == ["Pick &lt;one&gt; &amp; go"]
    assert message.text == "Pick &lt;one&gt; &amp; go"
    assert buttons(message)[0]["value"] == "yes"
    [blank] = check(render([chips("a")], RenderOptions(chips_prompt="  ")))
    assert sections(blank) == ["Please choose:"]


def test_many_chips_fill_several_actions_blocks() -> None:
    [message] = check(render([text("Pick"), chips(*[f"c{i}" for i in range(30)])], OPTIONS))
    assert [b["type"] for b in message.blocks] == ["section", "actions", "actions"]
    assert [len(b["elements"]) for b in message.blocks[1:]] == [MAX_ACTIONS, 5]
    ids = [b["action_id"] for b in buttons(message)]
    assert ids == [f"chip_{i}" for i in range(30)]


def test_at_most_a_hundred_chips() -> None:
    elements = [chips(*[f"a{i}" for i in range(80)]), chips(*[f"b{i}" for i in range(80)])]
    messages = check(render(elements, OPTIONS))
    values = [b["value"] for m in messages for b in buttons(m)]
    assert len(values) == 100 and values[-1] == "b19"
    for message in messages:
        ids = [b["action_id"] for b in buttons(message)]
        assert len(ids) == len(set(ids))  # unique within a message


def test_button_title_and_value_limits() -> None:
    long_title = "T" * 100
    long_value = "v" * 2500
    emoji_title = "🎉" * 50  # 100 UTF-16 units
    [message] = check(
        render([chips({"title": long_title, "value": long_value}, emoji_title)], OPTIONS)
    )
    first, second = buttons(message)
    assert first["text"]["text"] == "T" * (MAX_BUTTON_TEXT - 1) + "…"
    assert first["value"] == "v" * MAX_BUTTON_VALUE
    assert units(second["text"]["text"]) <= MAX_BUTTON_TEXT
    assert second["text"]["text"].endswith("…")
    assert second["value"] == emoji_title


def test_blank_chips_are_skipped() -> None:
    assert render([chips("  ", {"title": "only"}, {"nothing": 1})], OPTIONS)[0].blocks[1][
        "elements"
    ] == [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "only", "emoji": True},
            "value": "only",
            "action_id": "chip_0",
        }
    ]
    assert render([chips("  ")], OPTIONS) == []


def test_a_chip_set_is_never_split_across_messages() -> None:
    source = "\n\n".join("y" * 2900 for _ in range(49))
    messages = check(render([text(source), chips(*[f"c{i}" for i in range(30)])], OPTIONS))
    assert [len(m.blocks) for m in messages] == [49, 3]
    assert [b["type"] for b in messages[1].blocks] == ["section", "actions", "actions"]
    assert sections(messages[1]) == ["Please choose:"]


# --- render: cards --------------------------------------------------------------------------


def test_card_with_image() -> None:
    card = el(
        {
            "type": "cross_card",
            "title": "Pasta & Co",
            "subtitle": "Open <today>",
            "content": "Best in town",
            "image": {
                "accessibilityText": "A plate of pasta",
                "large": {"url": "https://img.example/pasta.jpg"},
            },
        }
    )
    [message] = check(render([card], OPTIONS))
    assert message.blocks == (
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Pasta &amp; Co*\n_Open &lt;today&gt;_\nBest in town",
            },
        },
        {
            "type": "image",
            "image_url": "https://img.example/pasta.jpg",
            "alt_text": "A plate of pasta",
        },
    )
    assert message.text == "*Pasta &amp; Co*\n_Open &lt;today&gt;_\nBest in town"


def test_card_alt_text_falls_back_to_title_then_image() -> None:
    titled = el(
        {"type": "cross_card", "title": "Menu", "image": {"small": {"url": "http://x.org/m.png"}}}
    )
    bare = el({"type": "cross_card", "image": {"large": {"url": "https://x.org/a.png"}}})
    [with_title] = check(render([titled], OPTIONS))
    assert with_title.blocks[1]["alt_text"] == "Menu"
    [image_only] = check(render([bare], OPTIONS))
    assert image_only.blocks == (
        {"type": "image", "image_url": "https://x.org/a.png", "alt_text": "image"},
    )
    assert image_only.text == "image"


def test_card_alt_text_is_limited() -> None:
    card = el(
        {
            "type": "cross_card",
            "image": {"accessibilityText": "a" * 2500, "large": {"url": "https://x.org/a.png"}},
        }
    )
    [message] = check(render([card], OPTIONS))
    assert len(message.blocks[0]["alt_text"]) == 2000


@pytest.mark.parametrize(
    "url", ["ftp://x.org/a.png", "javascript:alert(1)", "", "https://", "https://x.org/a b.png"]
)
def test_card_without_a_usable_image_url_is_text_only(url: str) -> None:
    card = el({"type": "cross_card", "title": "T", "image": {"large": {"url": url}}})
    [message] = check(render([card], OPTIONS))
    assert message.blocks == ({"type": "section", "text": {"type": "mrkdwn", "text": "*T*"}},)


def test_empty_card_renders_nothing() -> None:
    assert render([el({"type": "cross_card", "title": "  "})], OPTIONS) == []


def test_long_card_is_split_and_keeps_its_heading() -> None:
    card = el({"type": "cross_card", "title": "Terms", "content": "Clause. " * 800})
    [message] = check(render([card], OPTIONS))
    parts = sections(message)
    assert len(parts) == 3
    assert parts[0].startswith("*Terms*\nClause.")


# --- render: native blocks ------------------------------------------------------------------

NATIVE_BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Your order"}},
    {"type": "divider"},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*2× Margherita*"}},
]


def native(content: Any) -> ResponseElement:
    return el({"type": "payload", "content": {"slack": content}})


def test_native_blocks_are_a_message_of_their_own() -> None:
    payload = native({"blocks": NATIVE_BLOCKS, "text": "Your order"})
    messages = check(render([text("before"), payload, text("after")], OPTIONS))
    assert [sections(m) for m in messages] == [["before"], ["*2× Margherita*"], ["after"]]
    assert messages[1] == SlackMessage("Your order", tuple(NATIVE_BLOCKS))


def test_native_blocks_without_text_get_a_generic_fallback() -> None:
    [message] = check(render([native({"blocks": NATIVE_BLOCKS})], OPTIONS))
    assert message.text == NATIVE_FALLBACK


def test_native_blocks_are_copied() -> None:
    blocks = copy.deepcopy(NATIVE_BLOCKS)
    payload = native({"blocks": blocks})
    [message] = render([payload], OPTIONS)
    message.blocks[0]["text"]["text"] = "changed"
    assert payload.for_platform("slack")["blocks"][0]["text"]["text"] == "Your order"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("blocks", id="not an object"),
        pytest.param({"blocks": "nope"}, id="not a list"),
        pytest.param({"blocks": []}, id="empty"),
        pytest.param({"blocks": [{"type": "divider"}] * 51}, id="too many"),
        pytest.param({"blocks": [{"type": "divider"}, "x"]}, id="not objects"),
        pytest.param({"blocks": [{"text": "no type"}]}, id="no type"),
        pytest.param({"blocks": [{"type": 3}]}, id="type not a string"),
        pytest.param({"text": "only text"}, id="no blocks"),
    ],
)
def test_invalid_native_blocks_are_ignored(content: Any) -> None:
    assert render([native(content)], OPTIONS) == []


def test_native_blocks_with_chips() -> None:
    payload = el(
        {
            "type": "payload",
            "content": {"slack": {"blocks": NATIVE_BLOCKS}, "quickReplies": ["Pay", "Cancel"]},
        }
    )
    messages = check(render([payload], OPTIONS))
    assert len(messages) == 2
    assert messages[0].blocks == tuple(NATIVE_BLOCKS)
    assert sections(messages[1]) == ["Please choose:"]
    assert [b["value"] for b in buttons(messages[1])] == ["Pay", "Cancel"]


def test_other_platforms_payloads_are_not_shown() -> None:
    payload = el({"type": "payload", "content": {"telegram": {"text": "hi"}, "x": 1}})
    assert render([payload], OPTIONS) == []


# --- render: after a press ------------------------------------------------------------------


def test_pressed_blocks_replace_the_buttons_by_the_choice() -> None:
    [message] = render([text("Pick"), chips(*[f"c{i}" for i in range(30)])], OPTIONS)
    after = pressed_blocks(message.blocks, "c7 & <more>")
    assert after == [
        message.blocks[0],
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "✓ c7 &amp; &lt;more&gt;"}]},
    ]
    assert validate_blocks(after) == []
    assert pressed_blocks(after, "x") == after  # nothing left to press
    assert pressed_blocks([{"type": "actions", "elements": []}], " ")[0]["elements"][0] == {
        "type": "mrkdwn",
        "text": "✓",
    }


def test_pressed_blocks_do_not_touch_the_input() -> None:
    [message] = render([text("Pick"), chips("a")], OPTIONS)
    blocks = [dict(b) for b in message.blocks]
    pressed_blocks(blocks, "a")[0]["text"]["text"] = "changed"
    assert blocks[0]["text"]["text"] == "Pick"


# --- render: determinism and properties -----------------------------------------------------


def test_render_is_deterministic() -> None:
    elements = [
        text("Hello & welcome " * 300),
        chips(*[f"c{i}" for i in range(40)]),
        el({"type": "cross_card", "title": "T", "image": {"large": {"url": "https://x/y.png"}}}),
        native({"blocks": NATIVE_BLOCKS}),
    ]
    assert render(elements, OPTIONS) == render(elements, OPTIONS)


_PIECES = st.sampled_from(
    [
        "a",
        "word",
        "Hello",
        " ",
        "  ",
        "\n",
        "\n\n",
        ". ",
        "&",
        "<",
        ">",
        "&amp;",
        "🎉",
        "é",
        "x" * 40,
    ]
)


@FAST
@given(st.lists(_PIECES, max_size=1500), st.lists(_PIECES, max_size=40))
def test_random_texts_always_validate(pieces: list[str], chip_pieces: list[str]) -> None:
    source = "".join(pieces)
    messages = check(render([text(source)], OPTIONS))
    shown = "".join(unescape(s) for m in messages for s in sections(m))
    assert "".join(shown.split()) == "".join(source.split())  # nothing lost, nothing added
    card = el({"type": "cross_card", "title": source[:300], "content": source})
    check(render([text(source), chips(*chip_pieces), card, text(source[:500])], OPTIONS))


@FAST
@given(st.lists(_PIECES, max_size=300), st.integers(min_value=5, max_value=200))
def test_split_text_fits_escaped_chunks_in_the_limit(pieces: list[str], limit: int) -> None:
    source = "".join(pieces)
    chunks = split_text(source, limit)
    for chunk in chunks:
        assert chunk.strip() and chunk == chunk.rstrip()
        assert units(escape_mrkdwn(chunk)) <= limit
    assert "".join("".join(chunks).split()) == "".join(source.split())
