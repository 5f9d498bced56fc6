"""The Telegram channel's pure conversions: updates to inbound events (``normalize``) and
response elements to messages (``render``). Real ``telegram.Update`` objects from realistic
JSON; no network, no clock."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import Update

from adapters.telegram.normalize import (
    BotIdentity,
    ButtonPress,
    Ignored,
    NormalizeOptions,
    private_text,
    to_inbound,
)
from adapters.telegram.render import (
    MAX_CAPTION,
    MAX_TEXT,
    Button,
    PhotoPart,
    RenderOptions,
    TextPart,
    _fit,
    markdown_to_html,
    render,
    split_text,
    utf16_len,
)
from bridge.channel import Inbound, InboundKind
from bridge.textchat.models import ResponseElement, parse_element

FAST = settings(derandomize=True, max_examples=300, deadline=None, database=None)

# --- normalize: realistic updates -------------------------------------------------------------

BOT = BotIdentity(id=7001, username="OurBot")
DEFAULTS = NormalizeOptions()
DATE = 1_700_000_000

ADA = {
    "id": 42,
    "is_bot": False,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "username": "ada",
    "language_code": "en",
}
BOT_USER = {"id": BOT.id, "is_bot": True, "first_name": "Our Bot", "username": "OurBot"}
OTHER_BOT = {"id": 8002, "is_bot": True, "first_name": "Other", "username": "otherbot"}
BOB = {"id": 43, "is_bot": False, "first_name": "Bob"}
PRIVATE = {"id": 42, "type": "private", "first_name": "Ada", "username": "ada"}
GROUP = {"id": -1001234, "type": "supergroup", "title": "Team <Room>"}
FORUM = {"id": -1005678, "type": "supergroup", "title": "Forum", "is_forum": True}

# What a command means, by the kind of event it makes: (the command, the text that goes on).
Commands = dict[InboundKind, list[tuple[str, str]]]
PRIVATE_COMMANDS: Commands = {
    InboundKind.START: [
        ("/start", ""),
        ("/start promo-42", "promo-42"),
        ("/START", ""),
        ("/start@OurBot", ""),
    ],
    InboundKind.STOP: [("/stop", "")],
    InboundKind.RESTART: [("/restart", ""), ("/restart please now", "please now")],
    InboundKind.TEXT: [("/help", "/help"), ("/order 2 pizzas", "/order 2 pizzas")],
}
GROUP_COMMANDS: Commands = {
    InboundKind.START: [("/start", ""), ("/start@OurBot", ""), ("/start@ourbot deal", "deal")],
    InboundKind.STOP: [("/stop@OurBot", "")],
    InboundKind.RESTART: [("/restart", "")],
    InboundKind.TEXT: [
        ("/help@OurBot", "/help"),
        ("/help@OurBot with billing", "/help with billing"),
        ("/menu", "/menu"),
    ],
}


def by_kind(commands: Commands) -> list[tuple[InboundKind, str, str]]:
    return [(kind, text, rest) for kind, cases in commands.items() for text, rest in cases]


def u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def entity(text: str, part: str, kind: str, **extra: Any) -> dict[str, Any]:
    """An entity over the first occurrence of ``part``, offsets in UTF-16 units as Telegram
    sends them."""
    start = text.index(part)
    return {"type": kind, "offset": u16(text[:start]), "length": u16(part), **extra}


def message(
    chat: dict[str, Any] = PRIVATE,
    text: str | None = None,
    sender: dict[str, Any] | None = ADA,
    message_id: int = 500,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"message_id": message_id, "date": DATE, "chat": chat}
    if sender is not None:
        data["from"] = sender
    if text is not None:
        data["text"] = text
    data.update(extra)
    return data


def update(update_id: int = 9001, **fields: Any) -> Update:
    return Update.de_json({"update_id": update_id, **fields}, None)


def normal(
    msg: dict[str, Any], options: NormalizeOptions = DEFAULTS, update_id: int = 9001
) -> Inbound | ButtonPress | Ignored:
    full = to_inbound(update(update_id, message=msg), BOT, options)
    # Every message these tests read is also read the short way (private_text): where that
    # applies it must agree with the full way exactly.
    plain = private_text({"update_id": update_id, "message": msg}, BOT)
    assert plain is None or plain == full, (plain, full)
    return full


def inbound(msg: dict[str, Any], options: NormalizeOptions = DEFAULTS) -> Inbound:
    result = normal(msg, options)
    assert isinstance(result, Inbound), result
    return result


def ignored(msg: dict[str, Any], options: NormalizeOptions = DEFAULTS) -> str:
    result = normal(msg, options)
    assert isinstance(result, Ignored), result
    return result.reason


def mention(
    chat: dict[str, Any], text: str, handle: str = "@OurBot", **extra: Any
) -> dict[str, Any]:
    return message(chat, text, entities=[entity(text, handle, "mention")], **extra)


def command(chat: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
    cmd = text.split()[0]
    return message(chat, text, entities=[entity(text, cmd, "bot_command")], **extra)


def reply_from(
    sender: dict[str, Any], chat: dict[str, Any], message_id: int = 400
) -> dict[str, Any]:
    return message(chat, "earlier message", sender=sender, message_id=message_id)


class TestPrivateChat:
    def test_text_message(self) -> None:
        event = inbound(message(text="Hello there"))
        assert event.event_id == "tg:9001"
        assert event.conversation_key == "42"
        assert event.user_id == "42"
        assert event.kind is InboundKind.TEXT
        assert event.text == "Hello there"
        assert event.address == {
            "chat_id": 42,
            "chat_type": "private",
            "thread_id": None,
            "reply_to_message_id": None,
        }
        assert event.context == {
            "platform": "telegram",
            "chatType": "private",
            "userName": "Ada Lovelace",
            "userHandle": "ada",
            "languageCode": "en",
        }

    def test_address_and_context_are_plain_json(self) -> None:
        event = inbound(message(text="hi"))
        assert json.loads(json.dumps(event.address)) == event.address
        assert json.loads(json.dumps(event.context)) == event.context
        assert type(event.address["chat_type"]) is str
        assert all(type(v) in (str, bool) for v in event.context.values())

    def test_context_keeps_to_what_telegram_tells(self) -> None:
        event = inbound(message(text="hi", sender=BOB))
        assert event.context == {"platform": "telegram", "chatType": "private", "userName": "Bob"}
        premium = inbound(message(text="hi", sender={**ADA, "is_premium": True}))
        assert premium.context["isPremium"] is True

    def test_every_text_is_for_the_bot(self) -> None:
        assert inbound(message(text="no mention at all")).text == "no mention at all"

    def test_a_mention_is_stripped_in_private_too(self) -> None:
        assert inbound(mention(PRIVATE, "@OurBot what time is it?")).text == "what time is it?"

    @pytest.mark.parametrize(("kind", "text", "rest"), by_kind(PRIVATE_COMMANDS))
    def test_commands(self, text: str, kind: InboundKind, rest: str) -> None:
        event = inbound(command(PRIVATE, text))
        assert (event.kind, event.text) == (kind, rest)

    def test_a_command_for_another_bot_is_plain_text_in_private(self) -> None:
        event = inbound(command(PRIVATE, "/start@otherbot"))
        assert (event.kind, event.text) == (InboundKind.TEXT, "/start@otherbot")

    def test_a_command_not_at_the_start_is_text(self) -> None:
        text = "please /start"
        event = inbound(message(PRIVATE, text, entities=[entity(text, "/start", "bot_command")]))
        assert (event.kind, event.text) == (InboundKind.TEXT, "please /start")


# --- the short way for plain private texts (private_text) ------------------------------------

NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
WORDS = st.sampled_from(
    [
        "hi",
        "@OurBot",
        "@ourbot",
        "@someone",
        "/start",
        "/stop",
        "/restart",
        "/help",
        "/start@OurBot",
        "/start@otherbot",
        "😀",
        "ünï",
        " ",
        "\n",
        ",",
        "?",
    ]
)


@st.composite
def plain_private_texts(draw: st.DrawFn) -> dict[str, Any]:
    """Text messages in a private chat as Telegram sends them: entities where Telegram puts
    them (mentions, a command at the start), optional profile fields."""
    text = "".join(draw(st.lists(WORDS | NAMES, min_size=1, max_size=6)))
    entities = []
    for part, kind in (("@OurBot", "mention"), ("@ourbot", "mention"), ("@someone", "mention")):
        if part in text and draw(st.booleans()):
            entities.append(entity(text, part, kind))
    first = text.split(" ")[0]
    if first.startswith("/") and len(first) > 1 and draw(st.booleans()):
        entities.append(entity(text, first, "bot_command"))
    sender: dict[str, Any] = {"id": draw(st.integers(1, 2**40)), "is_bot": False}
    sender["first_name"] = draw(NAMES)
    for key in ("last_name", "username", "language_code"):
        if draw(st.booleans()):
            sender[key] = draw(NAMES)
    if draw(st.booleans()):
        sender["is_premium"] = draw(st.booleans())
    chat = {"id": sender["id"], "type": "private", "first_name": sender["first_name"]}
    msg = message(chat, text, sender=sender, message_id=draw(st.integers(1, 2**31)))
    if entities:
        msg["entities"] = sorted(entities, key=lambda e: e["offset"])
    return msg


class TestPrivateTextShortWay:
    @FAST
    @given(plain_private_texts(), st.integers(1, 2**31))
    def test_reads_every_plain_private_text_as_the_full_way_does(
        self, msg: dict[str, Any], update_id: int
    ) -> None:
        full = to_inbound(update(update_id, message=msg), BOT, DEFAULTS)
        plain = private_text({"update_id": update_id, "message": msg}, BOT)
        if isinstance(full, Inbound):
            assert plain == full
        else:
            assert plain is None  # an update to ignore is left to the full way, which logs it

    def test_takes_the_common_case(self) -> None:
        assert private_text({"update_id": 1, "message": message(text="hi")}, BOT) is not None
        assert private_text({"update_id": 1, "message": command(PRIVATE, "/start")}, BOT)

    @pytest.mark.parametrize(
        "msg",
        [
            pytest.param(message(GROUP, "@OurBot hi"), id="group"),
            pytest.param(message(text="hi", sender=OTHER_BOT), id="from-a-bot"),
            pytest.param(message(text="hi", sender=None), id="no-sender"),
            pytest.param(message(), id="no-text"),
            pytest.param(message(text="hi", reply_to_message=reply_from(BOB, PRIVATE)), id="reply"),
            pytest.param(
                message(
                    text="hi",
                    forward_origin={"type": "hidden_user", "date": DATE, "sender_user_name": "X"},
                ),
                id="forward",
            ),
            pytest.param(
                message(text="hi", is_topic_message=True, message_thread_id=5), id="topic"
            ),
            pytest.param(message(text="hi", some_future_field=1), id="unknown-field"),
            pytest.param(message({**PRIVATE, "id": "42"}, "hi"), id="chat-id-not-a-number"),
            pytest.param(message(text="hi", sender={**ADA, "id": True}), id="user-id-a-bool"),
            pytest.param(message(text="hi", sender={**ADA, "username": None}), id="null-field"),
            pytest.param(message(text="hi", entities=[{"type": "bold"}]), id="bad-entity"),
            pytest.param(message(text="hi", entities={"type": "bold"}), id="entities-not-a-list"),
            pytest.param(message(text="   "), id="blank"),
            pytest.param(message(PRIVATE, caption="hi", photo=[]), id="photo"),
        ],
    )
    def test_leaves_everything_else_to_the_full_way(self, msg: dict[str, Any]) -> None:
        assert private_text({"update_id": 1, "message": msg}, BOT) is None

    @pytest.mark.parametrize(
        "data",
        [
            None,
            [],
            "x",
            {"update_id": 1},
            {"update_id": "1", "message": message(text="hi")},
            {"update_id": 1, "message": message(text="hi"), "edited_message": {}},
            {"update_id": 1, "message": "hi"},
        ],
    )
    def test_odd_updates_are_left_to_the_full_way(self, data: Any) -> None:
        assert private_text(data, BOT) is None


class TestGroups:
    def test_chatter_not_for_the_bot_is_ignored(self) -> None:
        assert ignored(message(GROUP, "lunch anyone?")) == "group message not addressed to the bot"

    def test_mention_addresses_the_bot(self) -> None:
        event = inbound(mention(GROUP, "@OurBot what's the weather?", message_id=77))
        assert event.kind is InboundKind.TEXT
        assert event.text == "what's the weather?"
        assert event.conversation_key == "-1001234:0:42"
        assert event.address == {
            "chat_id": -1001234,
            "chat_type": "supergroup",
            "thread_id": None,
            "reply_to_message_id": 77,
        }
        assert event.context["chatTitle"] == "Team <Room>"
        assert event.context["chatType"] == "supergroup"

    def test_mention_is_case_insensitive_and_utf16_aware(self) -> None:
        text = "hey 🎉🎉 @ourbot, how are you 👋?"
        event = inbound(mention(GROUP, text, handle="@ourbot"))
        assert event.text == "hey 🎉🎉, how are you 👋?"

    def test_mention_in_the_middle_collapses_spaces(self) -> None:
        assert inbound(mention(GROUP, "so @OurBot tell me")).text == "so tell me"

    def test_leading_mention_drops_the_comma(self) -> None:
        assert inbound(mention(GROUP, "@OurBot, hello")).text == "hello"
        assert inbound(mention(GROUP, "@OurBot:\nhello")).text == "hello"

    def test_mention_at_the_end(self) -> None:
        assert inbound(mention(GROUP, "what now @OurBot")).text == "what now"

    def test_mention_of_someone_else_is_not_for_us(self) -> None:
        msg = mention(GROUP, "@otherbot do things", handle="@otherbot")
        assert ignored(msg) == "group message not addressed to the bot"

    def test_text_mention_of_the_bot(self) -> None:
        text = "Our Bot are you there"
        ent = entity(text, "Our Bot", "text_mention", user=BOT_USER)
        event = inbound(message(GROUP, text, entities=[ent]))
        assert event.text == "are you there"

    def test_a_bare_mention_is_ignored(self) -> None:
        assert ignored(mention(GROUP, "@OurBot")) == "empty message"
        assert ignored(mention(GROUP, "  @OurBot , ")) == "empty message"

    def test_reply_to_the_bot_addresses_it(self) -> None:
        msg = message(GROUP, "yes, the second one", reply_to_message=reply_from(BOT_USER, GROUP))
        event = inbound(msg)
        assert event.text == "yes, the second one"
        assert event.address["reply_to_message_id"] == 500

    def test_reply_to_someone_else_does_not(self) -> None:
        msg = message(GROUP, "agreed", reply_to_message=reply_from(BOB, GROUP))
        assert ignored(msg) == "group message not addressed to the bot"

    def test_plain_group_type_too(self) -> None:
        chat = {"id": -55, "type": "group", "title": "Old group"}
        event = inbound(mention(chat, "@OurBot hi"))
        assert event.conversation_key == "-55:0:42"
        assert event.address["chat_type"] == "group"

    @pytest.mark.parametrize(("kind", "text", "rest"), by_kind(GROUP_COMMANDS))
    def test_commands_addressed_to_us(self, text: str, kind: InboundKind, rest: str) -> None:
        event = inbound(command(GROUP, text))
        assert (event.kind, event.text) == (kind, rest)

    def test_commands_for_another_bot_are_ignored(self) -> None:
        assert ignored(command(GROUP, "/start@otherbot")) == "command for another bot"
        msg = command(GROUP, "/help@otherbot", reply_to_message=reply_from(BOT_USER, GROUP))
        assert ignored(msg) == "command for another bot"

    def test_per_chat_mode(self) -> None:
        options = NormalizeOptions(group_mode="per_chat")
        assert inbound(mention(GROUP, "@OurBot hi"), options).conversation_key == "-1001234:0"
        bob = inbound(mention(GROUP, "@OurBot hi", sender=BOB), options)
        assert bob.conversation_key == "-1001234:0"
        assert bob.user_id == "43"

    def test_per_user_mode_keeps_users_apart(self) -> None:
        ada = inbound(mention(GROUP, "@OurBot hi"))
        bob = inbound(mention(GROUP, "@OurBot hi", sender=BOB))
        assert ada.conversation_key != bob.conversation_key


class TestForumTopics:
    def topic_start(self, creator: dict[str, Any]) -> dict[str, Any]:
        return message(
            FORUM,
            sender=creator,
            message_id=31,
            forum_topic_created={"name": "Billing", "icon_color": 7322096},
            is_topic_message=True,
            message_thread_id=31,
        )

    def in_topic(self, text: str, **extra: Any) -> dict[str, Any]:
        return mention(
            FORUM,
            text,
            message_thread_id=31,
            is_topic_message=True,
            reply_to_message=self.topic_start(BOB),
            message_id=33,
            **extra,
        )

    def test_topics_are_kept_apart(self) -> None:
        event = inbound(self.in_topic("@OurBot invoice please"))
        assert event.conversation_key == "-1005678:31:42"
        assert event.address == {
            "chat_id": -1005678,
            "chat_type": "supergroup",
            "thread_id": 31,
            "reply_to_message_id": 33,
        }
        options = NormalizeOptions(group_mode="per_chat")
        assert inbound(self.in_topic("@OurBot hi"), options).conversation_key == "-1005678:31"

    def test_general_topic_is_thread_zero(self) -> None:
        event = inbound(mention(FORUM, "@OurBot hi"))
        assert event.conversation_key == "-1005678:0:42"
        assert event.address["thread_id"] is None

    def test_the_implicit_reply_to_a_topic_the_bot_started_is_not_a_reply(self) -> None:
        msg = message(
            FORUM,
            "just chatting in the topic",
            message_thread_id=31,
            is_topic_message=True,
            reply_to_message=self.topic_start(BOT_USER),
        )
        assert ignored(msg) == "group message not addressed to the bot"

    def test_a_reply_chain_outside_forums_is_no_thread(self) -> None:
        msg = mention(
            GROUP,
            "@OurBot and this?",
            message_thread_id=400,
            reply_to_message=reply_from(BOB, GROUP),
        )
        event = inbound(msg)
        assert event.conversation_key == "-1001234:0:42"
        assert event.address["thread_id"] is None


PHOTO = [{"file_id": "p1", "file_unique_id": "u2", "width": 90, "height": 60}]
STICKER = {
    "file_id": "CAAC",
    "file_unique_id": "u1",
    "type": "regular",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
}


class TestNonText:
    """How media messages become events; what each type maps to is in test_media.py."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("dice", {"emoji": "🎲", "value": 4}),
            ("story", {"chat": PRIVATE, "id": 5}),
            ("game", {"title": "G", "description": "d", "photo": PHOTO}),
        ],
    )  # fmt: skip
    def test_content_without_an_attachment_is_unsupported(self, field: str, value: Any) -> None:
        event = inbound(message(**{field: value}))
        assert (event.kind, event.text, event.attachments) == (InboundKind.UNSUPPORTED, field, ())
        assert event.conversation_key == "42"

    def test_a_photo_is_a_text_event_with_its_caption(self) -> None:
        event = inbound(message(photo=PHOTO, caption="What is this plant?"))
        assert (event.kind, event.text) == (InboundKind.TEXT, "What is this plant?")
        assert [a.locator for a in event.attachments] == ["p1"]
        assert event.event_id == "tg:9001" and event.address["chat_id"] == 42

    def test_without_a_caption_the_text_is_empty(self) -> None:
        event = inbound(message(sticker=STICKER))
        assert (event.kind, event.text) == (InboundKind.TEXT, "")
        assert [a.type.value for a in event.attachments] == ["sticker"]

    def test_caption_not_forwarded_when_off(self) -> None:
        options = NormalizeOptions(forward_captions=False)
        event = inbound(message(photo=PHOTO, caption="What is this?"), options)
        assert (event.kind, event.text) == (InboundKind.TEXT, "")
        assert len(event.attachments) == 1

    def test_a_voice_caption_is_forwarded_too(self) -> None:
        voice = {"file_id": "v1", "file_unique_id": "u3", "duration": 3}
        event = inbound(message(voice=voice, caption="listen"))
        assert (event.kind, event.text) == (InboundKind.TEXT, "listen")

    def test_group_photo_needs_a_mention_or_reply(self) -> None:
        assert ignored(message(GROUP, photo=PHOTO)) == "group message not addressed to the bot"
        caption = "@OurBot is this ok?"
        msg = message(
            GROUP,
            photo=PHOTO,
            caption=caption,
            caption_entities=[entity(caption, "@OurBot", "mention")],
        )
        event = inbound(msg)
        assert event.text == "is this ok?"
        assert event.conversation_key == "-1001234:0:42"
        assert event.address["reply_to_message_id"] == 500
        bare = message(
            GROUP,
            photo=PHOTO,
            caption="@OurBot",
            caption_entities=[entity("@OurBot", "@OurBot", "mention")],
        )
        assert (inbound(bare).kind, inbound(bare).text) == (InboundKind.TEXT, "")

    def test_group_sticker_in_reply_to_the_bot(self) -> None:
        msg = message(GROUP, sticker=STICKER, reply_to_message=reply_from(BOT_USER, GROUP))
        event = inbound(msg)
        assert (event.kind, event.text) == (InboundKind.TEXT, "")
        assert [a.locator for a in event.attachments] == ["CAAC"]
        assert ignored(message(GROUP, sticker=STICKER)) == "group message not addressed to the bot"


class TestIgnored:
    def test_edited_message(self) -> None:
        result = to_inbound(update(edited_message=message(text="typo fixed")), BOT, DEFAULTS)
        assert result == Ignored("edited message")

    def test_channel_posts(self) -> None:
        channel = {"id": -100999, "type": "channel", "title": "News"}
        post = message(channel, "news", sender=None, sender_chat=channel)
        assert to_inbound(update(channel_post=post), BOT, DEFAULTS) == Ignored("channel post")
        edited = to_inbound(update(edited_channel_post=post), BOT, DEFAULTS)
        assert edited == Ignored("edited channel post")

    def test_membership_changes(self) -> None:
        member = {
            "chat": GROUP,
            "from": ADA,
            "date": DATE,
            "old_chat_member": {"status": "left", "user": BOT_USER},
            "new_chat_member": {"status": "member", "user": BOT_USER},
        }
        result = to_inbound(update(my_chat_member=member), BOT, DEFAULTS)
        assert result == Ignored("bot membership change")
        assert to_inbound(update(chat_member=member), BOT, DEFAULTS) == Ignored(
            "chat member change"
        )

    def test_an_update_with_nothing_known(self) -> None:
        assert to_inbound(update(), BOT, DEFAULTS) == Ignored("unsupported update type")

    def test_messages_from_bots(self) -> None:
        assert ignored(message(text="beep", sender=OTHER_BOT)) == "message from a bot"
        assert ignored(mention(GROUP, "@OurBot beep", sender=OTHER_BOT)) == "message from a bot"

    def test_messages_on_behalf_of_a_chat(self) -> None:
        channel = {"id": -100999, "type": "channel", "title": "News"}
        telegram = {"id": 777000, "is_bot": False, "first_name": "Telegram"}
        msg = mention(
            GROUP, "@OurBot hi", sender=telegram, sender_chat=channel, is_automatic_forward=True
        )
        assert ignored(msg) == "message sent on behalf of a chat"

    def test_missing_sender(self) -> None:
        assert ignored(message(text="who am I", sender=None)) == "message without a sender"

    @pytest.mark.parametrize(
        "extra",
        [
            {"new_chat_members": [BOB]},
            {"left_chat_member": BOB},
            {"new_chat_title": "Renamed"},
            {"pinned_message": {"message_id": 3, "date": DATE, "chat": GROUP, "text": "pin"}},
            {"group_chat_created": True},
        ],
    )
    def test_service_messages(self, extra: dict[str, Any]) -> None:
        assert ignored(message(GROUP, **extra)) == "service message"
        assert ignored(message(PRIVATE, **extra)) == "service message"


class TestButtonPresses:
    def press(self, msg: dict[str, Any] | None, data: str = "b:tok:1", **extra: Any) -> Any:
        query: dict[str, Any] = {
            "id": "4382bfdwdsb323b2d9",
            "from": ADA,
            "chat_instance": "-8237482374",
            "data": data,
            **extra,
        }
        if msg is not None:
            query["message"] = msg
        return to_inbound(update(9100, callback_query=query), BOT, DEFAULTS)

    def test_private(self) -> None:
        press = self.press(message(PRIVATE, "Choose:", sender=BOT_USER, message_id=600))
        assert isinstance(press, ButtonPress)
        assert press.callback_query_id == "4382bfdwdsb323b2d9"
        assert press.data == "b:tok:1"
        assert (press.chat_id, press.message_id) == (42, 600)
        assert press.conversation_key == "42"
        assert press.user_id == "42"
        assert press.address["reply_to_message_id"] is None
        event = press.inbound("second option")
        assert event == Inbound(
            event_id="tg:9100",
            conversation_key="42",
            user_id="42",
            kind=InboundKind.BUTTON,
            text="second option",
            address=press.address,
            context=press.context,
        )
        assert event.context["platform"] == "telegram"

    def test_the_key_matches_a_message_from_that_user_there(self) -> None:
        cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
            (GROUP, {}),
            (FORUM, {"message_thread_id": 31, "is_topic_message": True}),
            (FORUM, {}),
        ]
        for chat, extra in cases:
            said = inbound(mention(chat, "@OurBot hi", **extra))
            held = message(chat, "Pick one", sender=BOT_USER, message_id=601, **extra)
            press = self.press(held)
            assert isinstance(press, ButtonPress)
            assert press.conversation_key == said.conversation_key
            assert press.address["thread_id"] == said.address["thread_id"]
            assert press.address["reply_to_message_id"] == 601

    def test_inaccessible_message(self) -> None:
        old = {"message_id": 602, "date": 0, "chat": GROUP}
        press = self.press(old)
        assert isinstance(press, ButtonPress)
        assert press.conversation_key == "-1001234:0:42"
        assert press.message_id == 602
        old_in_forum = {"message_id": 602, "date": 0, "chat": FORUM}
        assert isinstance(self.press(old_in_forum), Ignored)

    def test_inline_message_button(self) -> None:
        result = self.press(None, inline_message_id="AAAA")
        assert result == Ignored("button press on an inline message")

    def test_button_without_data_still_a_press(self) -> None:
        held = message(PRIVATE, "Play", sender=BOT_USER)
        press = self.press(held, data=None, game_short_name="tetris")  # type: ignore[arg-type]
        assert isinstance(press, ButtonPress)
        assert press.data is None


# --- render: lengths and splitting ------------------------------------------------------------


def test_utf16_len() -> None:
    assert utf16_len("") == 0
    assert utf16_len("abc") == 3
    assert utf16_len("é") == 1
    assert utf16_len("🎉") == 2
    assert utf16_len("👍🏽") == 4
    assert utf16_len("𝄞a") == 3


class TestSplit:
    def test_short_text_is_one_chunk(self) -> None:
        assert split_text("  hello  ") == ["  hello  "]
        assert split_text("x" * MAX_TEXT) == ["x" * MAX_TEXT]

    def test_blank_text_is_no_chunk(self) -> None:
        assert split_text("") == []
        assert split_text(" \n\n ") == []

    def test_an_emoji_at_the_limit_is_never_split(self) -> None:
        text = "a" * 4095 + "🎉" + "b" * 10
        chunks = split_text(text)
        assert chunks == ["a" * 4095, "🎉" + "b" * 10]
        assert utf16_len(chunks[0]) == 4095
        text = "🎉" * 3000  # 6000 units, no boundary at all
        chunks = split_text(text)
        assert [utf16_len(c) for c in chunks] == [4096, 1904]
        assert "".join(chunks) == text

    def test_astral_characters_count_double(self) -> None:
        chunks = split_text("𝄞" * 10, 4)
        assert chunks == ["𝄞𝄞"] * 5

    def test_paragraph_before_line_before_sentence_before_word(self) -> None:
        text = "aaaa aaaa aaaa aaaa aaaa.\n\nbb. bb\nbb bb bb bb bb bb bb"
        assert split_text(text, 40) == ["aaaa aaaa aaaa aaaa aaaa.", "bb. bb\nbb bb bb bb bb bb bb"]
        text = "aaaa. aaaa aaaa aaaa aaaa\nbbbb. bbbb bbbb bbbb bbbb"
        assert split_text(text, 40) == ["aaaa. aaaa aaaa aaaa aaaa", "bbbb. bbbb bbbb bbbb bbbb"]
        text = "aaaa aaaa aaaa aaaa aaaa! bbbb bbbb bbbb bbbb"
        assert split_text(text, 40) == ["aaaa aaaa aaaa aaaa aaaa!", "bbbb bbbb bbbb bbbb"]
        text = "Is it? Yes it is! Really… sure and then more words"
        assert split_text(text, 30) == ["Is it? Yes it is! Really…", "sure and then more words"]

    def test_an_early_boundary_yields_to_a_later_kind(self) -> None:
        # A cut right after "Title" would leave a chunk under half the limit.
        text = "Title\nA sentence that goes on. And on and on"
        assert split_text(text, 40) == ["Title\nA sentence that goes on.", "And on and on"]
        # ... but a short chunk at a boundary still beats cutting a word.
        assert split_text("ab " + "x" * 50, 20) == ["ab", "x" * 20, "x" * 20, "x" * 10]

    def test_word_before_hard_cut(self) -> None:
        assert split_text("alpha beta gamma delta", 12) == ["alpha beta", "gamma delta"]

    def test_hard_cut(self) -> None:
        assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]

    def test_hard_cut_keeps_marks_and_emoji_sequences(self) -> None:
        assert split_text("abcde\u0301f", 5) == ["abcd", "e\u0301f"]
        family = "👨\u200d👩\u200d👧"  # 8 units
        assert split_text("xx" + family, 8) == ["xx", family]
        assert split_text("🇩🇪🇫🇷🇮🇹", 6) == ["🇩🇪", "🇫🇷", "🇮🇹"]

    def test_only_whitespace_at_cuts_is_lost(self) -> None:
        text = "word " * 2000
        chunks = split_text(text)
        assert all(utf16_len(c) <= MAX_TEXT for c in chunks)
        assert " ".join(chunks).rstrip() == text.rstrip()

    def test_limit_must_hold_an_astral_character(self) -> None:
        with pytest.raises(ValueError):
            split_text("abc", 1)


SPLIT_ALPHABET = st.sampled_from(
    [*"ab .!?\n\t", "\n\n", ". ", "… ", "é", "e\u0301", "🎉", "👍🏽", "🇩🇪", "\u200d", "𝄞"]
)


@FAST
@given(st.lists(SPLIT_ALPHABET, max_size=120).map("".join), st.integers(2, 40))
def test_split_properties(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    position = 0
    for chunk in chunks:
        assert chunk.strip(), "no empty or blank chunk"
        assert utf16_len(chunk) <= limit
        found = text.find(chunk, position)
        assert found != -1
        assert not text[position:found].strip(), "only whitespace between chunks"
        position = found + len(chunk)
    assert not text[position:].strip()
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", text)
    if text.strip() and utf16_len(text) <= limit:
        assert chunks == [text]


# --- render: Markdown -------------------------------------------------------------------------


class TestMarkdown:
    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
            ('say "hi"', 'say "hi"'),
            ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
            ("*it* and _it_", "<i>it</i> and <i>it</i>"),
            ("~~gone~~", "<s>gone</s>"),
            ("use `a<b && c`", "use <code>a&lt;b &amp;&amp; c</code>"),
            ("``code with ` tick``", "<code>code with ` tick</code>"),
            ("```\nx = 1 < 2\n```", "<pre>x = 1 &lt; 2</pre>"),
            (
                "```python\nprint('*no* **md**')\n```",
                "<pre><code class=\"language-python\">print('*no* **md**')</code></pre>",
            ),
            ("snake_case_name and my_var_", "snake_case_name and my_var_"),
            ("2*3*4 = 24", "2*3*4 = 24"),
            ("**unclosed bold", "**unclosed bold"),
            ("*a **b** c*", "<i>a <b>b</b> c</i>"),
            ("**a *b** c*", "<b>a *b</b> c*"),
            ("* list item\n* another", "* list item\n* another"),
            ("~single~ tilde", "~single~ tilde"),
            ("***both***", "***both***"),
            ("`unclosed code", "`unclosed code"),
            (
                '[Docs](https://example.com/a?b=1&c="2")',
                '<a href="https://example.com/a?b=1&amp;c=&quot;2&quot;">Docs</a>',
            ),
            (
                "[**Wiki** page](https://en.wikipedia.org/wiki/Foo_(bar))",
                '<a href="https://en.wikipedia.org/wiki/Foo_(bar)"><b>Wiki</b> page</a>',
            ),
            ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
            ("[x](ftp://host/file)", "[x](ftp://host/file)"),
            ("see https://x.org/a_b_c_ now", "see https://x.org/a_b_c_ now"),
            ("*https://x.org/a_b*", "<i>https://x.org/a_b</i>"),
            ("(*aside*)", "(<i>aside</i>)"),
            ("\\*not italic\\* and \\<b\\>", "*not italic* and &lt;b&gt;"),
            ("C:\\Users\\me", "C:\\Users\\me"),
            ("", ""),
        ],
    )
    def test_conversions(self, source: str, expected: str) -> None:
        assert markdown_to_html(source) == expected


ALLOWED_TAGS = {"b", "i", "s", "code", "pre", "a"}


class TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED_TAGS, tag
        if tag == "a":
            assert [k for k, _ in attrs] == ["href"]
            assert (dict(attrs)["href"] or "").startswith(("http://", "https://"))
        elif tag == "code" and self.stack and self.stack[-1] == "pre":
            assert [k for k, _ in attrs] == ["class"]
        else:
            assert not attrs, (tag, attrs)
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(markup: str) -> str:
    """Balanced, allowed tags only; returns the visible text."""
    checker = TagChecker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == []
    assert "<" not in re.sub(r"<(/?)(b|i|s|code|pre|a)( [^>]*)?>", "", markup)
    return "".join(checker.text)


MARKDOWN_ALPHABET = st.sampled_from(
    ["*", "**", "_", "__", "~", "~~", "`", "```", "[", "]", "(", ")", "https://x.io/a_b",
     "a", "b", "word", " ", "\n", "<", ">", "&", '"', "é", "🎉", "_x_", "[l](https://q.io)",
     "\\", "```py\n"]
)  # fmt: skip


@FAST
@given(st.lists(MARKDOWN_ALPHABET, max_size=40).map("".join))
def test_markdown_is_always_well_formed(source: str) -> None:
    check_html(markdown_to_html(source))


@FAST
@given(
    st.lists(
        st.sampled_from(["*", "**", "_", "__", "~~", "a", "bc", " ", "\n", "<", "&", ">", "é"]),
        max_size=40,
    ).map("".join)
)
def test_markdown_keeps_every_visible_character(source: str) -> None:
    visible = check_html(markdown_to_html(source))
    assert re.sub(r"[*_~]", "", visible) == re.sub(r"[*_~]", "", source)


# --- render: parts ----------------------------------------------------------------------------

PLAIN = RenderOptions()
MARKDOWN = RenderOptions(text_format="markdown")


def elements(*raw: dict[str, Any]) -> list[ResponseElement]:
    return [parse_element(r) for r in raw]


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def chips(*values: Any, key: str = "suggestionChips") -> dict[str, Any]:
    return {"type": "payload", "content": {key: list(values)}}


def card(**fields: Any) -> dict[str, Any]:
    return {"type": "cross_card", **fields}


IMAGE = {
    "accessibilityText": "A red bicycle",
    "large": {"url": "https://cdn.example.com/bike-large.png", "width": "800", "height": "600"},
    "small": {"url": "https://cdn.example.com/bike-small.png"},
}


class TestRenderText:
    def test_plain(self) -> None:
        parts = render(elements(text("Hi <there> & **you**")), PLAIN)
        assert parts == [TextPart("Hi <there> & **you**", None)]

    def test_markdown(self) -> None:
        parts = render(elements(text("Hi <there> & **you**")), MARKDOWN)
        assert parts == [TextPart("Hi &lt;there&gt; &amp; <b>you</b>", "HTML")]

    def test_empty_texts_give_nothing(self) -> None:
        assert render(elements(text(""), text("  \n "), text("ok")), PLAIN) == [
            TextPart("ok", None)
        ]

    def test_long_plain_text_is_split(self) -> None:
        long = ("A sentence of moderate length. " * 40 + "\n\n") * 5
        parts = render(elements(text(long)), PLAIN)
        assert len(parts) > 1
        assert all(isinstance(p, TextPart) and utf16_len(p.text) <= MAX_TEXT for p in parts)
        assert all(p.parse_mode is None for p in parts if isinstance(p, TextPart))

    def test_markdown_tags_never_cross_parts(self) -> None:
        source = "**" + "bold words " * 500 + "**"
        parts = render(elements(text(source)), MARKDOWN)
        assert len(parts) == 2
        for part in parts:
            assert isinstance(part, TextPart)
            assert part.parse_mode == "HTML"
            assert utf16_len(part.text) <= MAX_TEXT
            check_html(part.text)

    def test_escaping_growth_is_split_further(self) -> None:
        parts = render(elements(text("<" * MAX_TEXT)), MARKDOWN)
        assert len(parts) > 1
        visible = ""
        for part in parts:
            assert isinstance(part, TextPart)
            assert utf16_len(part.text) <= MAX_TEXT
            assert part.parse_mode == "HTML"
            visible += html.unescape(part.text)
        assert visible == "<" * MAX_TEXT

    def test_last_resort_is_plain_text(self) -> None:
        pieces = _fit("abcdefgh" * 4, 16, lambda chunk: chunk * 100)
        assert pieces == [("abcdefghabcdefgh", None), ("abcdefghabcdefgh", None)]


class TestChips:
    def test_chips_attach_to_the_last_part(self) -> None:
        parts = render(elements(text("Pizza or pasta?"), chips("Pizza", "Pasta")), PLAIN)
        keyboard = ((Button("Pizza", "Pizza"), Button("Pasta", "Pasta")),)
        assert parts == [TextPart("Pizza or pasta?", None, keyboard)]

    def test_chips_without_a_part_get_the_prompt(self) -> None:
        options = RenderOptions(chips_prompt="Pick one:")
        parts = render(elements(chips("yes", "no")), options)
        assert parts == [TextPart("Pick one:", None, ((Button("yes", "yes"), Button("no", "no")),))]

    def test_second_chips_get_a_part_of_their_own(self) -> None:
        parts = render(elements(text("Q?"), chips("a"), chips("b")), PLAIN)
        assert parts == [
            TextPart("Q?", None, ((Button("a", "a"),),)),
            TextPart("Please choose:", None, ((Button("b", "b"),),)),
        ]

    def test_chips_go_on_the_last_split_part(self) -> None:
        parts = render(elements(text("word " * 2000), chips("ok")), PLAIN)
        assert len(parts) == 3
        assert [p.buttons for p in parts] == [(), (), ((Button("ok", "ok"),),)]

    def test_title_value_objects(self) -> None:
        raw = [{"title": "Talk to a human", "value": "agent"}, "  later  "]
        parts = render(elements(text("Next?"), chips(*raw, key="quickReplies")), PLAIN)
        assert parts[0].buttons == ((Button("Talk to a human", "agent"), Button("later", "later")),)

    def test_rows(self) -> None:
        long = "A rather long option title"
        parts = render(elements(chips("1", "2", "3", long, "4", "5")), PLAIN)
        assert [[b.title for b in row] for row in parts[0].buttons] == [
            ["1", "2"],
            ["3"],
            [long],
            ["4", "5"],
        ]
        three = RenderOptions(buttons_per_row=3)
        parts = render(elements(chips(*"abcdefg")), three)
        assert [len(row) for row in parts[0].buttons] == [3, 3, 1]

    def test_long_titles_are_cut(self) -> None:
        title = "x" * 80
        parts = render(elements(chips({"title": title, "value": "v"})), PLAIN)
        button = parts[0].buttons[0][0]
        assert button.title == "x" * 63 + "…"
        assert len(button.title) == 64
        assert button.value == "v"

    def test_at_most_100_buttons(self) -> None:
        parts = render(elements(chips(*(f"option {i}" for i in range(150)))), PLAIN)
        flat = [b for row in parts[0].buttons for b in row]
        assert len(flat) == 100
        assert flat[-1].value == "option 99"

    def test_payload_without_chips_gives_nothing(self) -> None:
        raw = {"type": "payload", "content": {"analytics": {"intent": "x"}}}
        assert render(elements(raw), PLAIN) == []
        assert render(elements(chips()), PLAIN) == []

    def test_chips_on_a_photo_reach_its_fallback(self) -> None:
        parts = render(elements(card(title="Bike", image=IMAGE), chips("Buy")), PLAIN)
        assert len(parts) == 1
        photo = parts[0]
        assert isinstance(photo, PhotoPart)
        assert photo.buttons == ((Button("Buy", "Buy"),),)
        assert photo.fallback.buttons == photo.buttons


class TestNativePayload:
    def native(self, value: Any) -> dict[str, Any]:
        return {"type": "payload", "content": {"telegram": value}}

    def test_valid(self) -> None:
        html_payload = {"text": "<b>Hi</b>", "parse_mode": "HTML", "extra": [1]}
        assert render(elements(self.native(html_payload)), PLAIN) == [TextPart("<b>Hi</b>", "HTML")]
        md = {"text": "*Hi*", "parse_mode": "MarkdownV2"}
        assert render(elements(self.native(md)), PLAIN) == [TextPart("*Hi*", "MarkdownV2")]
        assert render(elements(self.native({"text": "raw"})), PLAIN) == [TextPart("raw", None)]

    @pytest.mark.parametrize(
        "value",
        [
            "just a string",
            {"text": ""},
            {"text": "  "},
            {"text": 5},
            {"text": "hi", "parse_mode": "Markdown"},
            {"text": "hi", "parse_mode": "html"},
            {"text": "🎉" * 2049},
            {"parse_mode": "HTML"},
            ["text"],
        ],
    )
    def test_invalid_is_ignored(self, value: Any) -> None:
        assert render(elements(self.native(value)), PLAIN) == []

    def test_native_text_with_chips(self) -> None:
        raw = {
            "type": "payload",
            "content": {"telegram": {"text": "Choose"}, "suggestionChips": ["A"]},
        }
        assert render(elements(raw), PLAIN) == [TextPart("Choose", None, ((Button("A", "A"),),))]


class TestCards:
    def test_card_with_image(self) -> None:
        raw = card(title="Bike", subtitle="Red & fast", content="Only 5 left <today>", image=IMAGE)
        [photo] = render(elements(raw), PLAIN)
        assert photo == PhotoPart(
            url="https://cdn.example.com/bike-large.png",
            caption="Bike\nRed & fast\nOnly 5 left <today>",
            parse_mode=None,
            fallback=TextPart(
                "Bike\nRed & fast\nOnly 5 left <today>\n"
                "[image: A red bicycle] https://cdn.example.com/bike-large.png",
                None,
            ),
        )

    def test_card_with_image_markdown(self) -> None:
        raw = card(title="Bike <1>", subtitle="Red & **fast**", image=IMAGE)
        [photo] = render(elements(raw), MARKDOWN)
        assert isinstance(photo, PhotoPart)
        assert photo.caption == "<b>Bike &lt;1&gt;</b>\nRed &amp; **fast**"
        assert photo.parse_mode == "HTML"
        assert photo.fallback == TextPart(
            "<b>Bike &lt;1&gt;</b>\nRed &amp; **fast**\n"
            "[image: A red bicycle] https://cdn.example.com/bike-large.png",
            "HTML",
        )

    def test_small_image_and_no_alt_text(self) -> None:
        image = {"small": {"url": "https://cdn.example.com/s.jpg"}}
        [photo] = render(elements(card(image=image)), PLAIN)
        assert isinstance(photo, PhotoPart)
        assert photo.url == "https://cdn.example.com/s.jpg"
        assert photo.caption is None
        assert photo.fallback == TextPart("[image: image] https://cdn.example.com/s.jpg", None)

    def test_card_without_image(self) -> None:
        parts = render(elements(card(title="Hours", content="9–17 <CET>")), PLAIN)
        assert parts == [TextPart("Hours\n9–17 <CET>", None)]
        parts = render(elements(card(title="Hours", content="9–17 <CET>")), MARKDOWN)
        assert parts == [TextPart("<b>Hours</b>\n9–17 &lt;CET&gt;", "HTML")]

    def test_image_url_telegram_cannot_fetch_is_left_out(self) -> None:
        image = {"large": {"url": "data:image/png;base64,AAAA"}}
        parts = render(elements(card(title="T", content="c", image=image)), PLAIN)
        assert parts == [TextPart("T\nc", None)]

    def test_long_caption_overflows_into_text(self) -> None:
        content = "A sentence about the bike. " * 80  # ~2160 units
        parts = render(elements(card(title="Bike", content=content, image=IMAGE)), PLAIN)
        photo, *rest = parts
        assert isinstance(photo, PhotoPart)
        assert photo.caption is not None
        assert utf16_len(photo.caption) <= MAX_CAPTION
        assert photo.caption.startswith("Bike\nA sentence")
        assert photo.caption.endswith(".")
        assert rest and all(isinstance(p, TextPart) for p in rest)
        rejoined = " ".join([photo.caption, *(p.text for p in rest if isinstance(p, TextPart))])
        assert rejoined.split() == ("Bike\n" + content).split()
        assert utf16_len(photo.fallback.text) <= MAX_TEXT

    def test_long_caption_markdown_fits_after_escaping(self) -> None:
        content = "a<b & c>d " * 200
        parts = render(elements(card(title="T", content=content, image=IMAGE)), MARKDOWN)
        photo = parts[0]
        assert isinstance(photo, PhotoPart) and photo.caption is not None
        assert utf16_len(photo.caption) <= MAX_CAPTION
        assert photo.caption.startswith("<b>T</b>\n")
        visible = html.unescape(re.sub(r"</?b>", "", photo.caption))
        for part in parts[1:]:
            assert isinstance(part, TextPart)
            assert utf16_len(part.text) <= MAX_TEXT
            check_html(part.text)
            visible += " " + html.unescape(part.text)
        assert visible.split() == ("T\n" + content).split()

    def test_empty_card_gives_nothing(self) -> None:
        assert render(elements(card(id="c1", title="  ")), PLAIN) == []


class TestRender:
    def test_unknown_elements_give_nothing(self) -> None:
        raw = elements({"type": "carousel", "items": []}, {"type": "text"}, text("after"))
        assert render(raw, PLAIN) == [TextPart("after", None)]

    def test_a_whole_delivery_in_order(self) -> None:
        parts = render(
            elements(
                text("Welcome!"),
                card(title="Today", content="Soup", image=IMAGE),
                chips("Order", "Menu"),
                text("Anything else?"),
            ),
            PLAIN,
        )
        assert [type(p).__name__ for p in parts] == ["TextPart", "PhotoPart", "TextPart"]
        assert parts[0].buttons == ()
        assert [b.title for row in parts[1].buttons for b in row] == ["Order", "Menu"]

    @pytest.mark.parametrize("options", [PLAIN, MARKDOWN])
    def test_deterministic(self, options: RenderOptions) -> None:
        wire = [
            text("**Hello** " + "there. " * 900),
            chips("a", {"title": "B" * 70, "value": "b"}),
            card(title="C", content="x <y> " * 300, image=IMAGE),
            {"type": "payload", "content": {"telegram": {"text": "n", "parse_mode": "HTML"}}},
            chips("z"),
        ]
        first = render(elements(*wire), options)
        assert first == render(elements(*json.loads(json.dumps(wire))), options)
        assert len(first) > 3


RENDER_PIECES = st.sampled_from(
    ["word ", "Sentence. ", "**bold** ", "_it_ ", "`x<y` ", "\n", "\n\n", "<&>", "🎉", "~~s~~ ",
     "[l](https://q.io/a_b) ", "```\ncode\n```", "*", "__", "e\u0301"]
)  # fmt: skip
RENDER_TEXTS = st.tuples(st.lists(RENDER_PIECES, max_size=12), st.integers(1, 700)).map(
    lambda pair: "".join(pair[0]) * pair[1]
)
RENDER_ELEMENTS = st.lists(
    st.one_of(
        RENDER_TEXTS.map(text),
        st.lists(st.text(max_size=80), max_size=130).map(lambda values: chips(*values)),
        st.builds(
            lambda title, content, with_image: card(
                title=title, content=content, **({"image": IMAGE} if with_image else {})
            ),
            st.text(max_size=30),
            RENDER_TEXTS,
            st.booleans(),
        ),
    ),
    max_size=4,
)


@settings(derandomize=True, max_examples=60, deadline=None, database=None)
@given(RENDER_ELEMENTS, st.sampled_from([PLAIN, MARKDOWN]))
def test_render_never_produces_a_part_telegram_refuses(
    raw: list[dict[str, Any]], options: RenderOptions
) -> None:
    parts = render(elements(*raw), options)
    assert parts == render(elements(*raw), options)
    for part in parts:
        assert sum(len(row) for row in part.buttons) <= 100
        assert all(len(b.title.strip()) > 0 and len(b.title) <= 64 for r in part.buttons for b in r)
        texts = [(part.text, part.parse_mode, MAX_TEXT)] if isinstance(part, TextPart) else []
        if isinstance(part, PhotoPart):
            fallback = part.fallback
            texts.append((fallback.text, fallback.parse_mode, MAX_TEXT))
            if part.caption is not None:
                texts.append((part.caption, part.parse_mode, MAX_CAPTION))
        for body, mode, limit in texts:
            assert body.strip()
            assert utf16_len(body) <= limit
            assert mode in (None, "HTML")
            if mode == "HTML":
                check_html(body)
