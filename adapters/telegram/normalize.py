"""Telegram updates to the core's :class:`Inbound`, as a pure function: no I/O, no clock.

:func:`to_inbound` answers one of three things for every update, and never raises:

- :class:`~bridge.channel.Inbound`: a user's turn for the bot (text, command, media with its
  caption as the text and the file described as an attachment: media.py, or unsupported content);
- :class:`ButtonPress`: a pressed inline button; the adapter resolves ``data`` (its token) to the
  chip's value and builds the event with :meth:`ButtonPress.inbound`;
- :class:`Ignored`: not for the bot (other updates, other people's group chatter, bots, service
  messages), with a short reason for the debug log.

Conversations: a private chat is one conversation; in groups each user has their own
(``per_user``) or the whole chat shares one (``per_chat``), and forum topics are kept apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from telegram import Chat, Message, MessageEntity, Update, User

from adapters.telegram.media import attachment_of
from bridge.channel import ContextScalar, Inbound, InboundKind
from bridge.media.attachments import Attachment

PLATFORM = "telegram"

GROUP_TYPES = frozenset({Chat.GROUP, Chat.SUPERGROUP})

# Content a user can send besides text, in the order checked (an animation also carries
# ``document``, a venue also carries ``location``): the kinds media.py reads become attachments,
# the rest is unsupported.
_CONTENT_KINDS = (
    "sticker",
    "live_photo",
    "photo",
    "voice",
    "audio",
    "video_note",
    "video",
    "animation",
    "document",
    "venue",
    "location",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
    "paid_media",
    "checklist",
)

# Service messages (joins, leaves, pins, topic changes, ...): only for a precise Ignored reason;
# anything without text or known content is ignored either way.
_SERVICE_FIELDS = (
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "message_auto_delete_timer_changed",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
    "pinned_message",
    "users_shared",
    "chat_shared",
    "connected_website",
    "write_access_allowed",
    "proximity_alert_triggered",
    "boost_added",
    "chat_background_set",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "general_forum_topic_hidden",
    "general_forum_topic_unhidden",
    "giveaway_created",
    "giveaway_completed",
    "giveaway_winners",
    "video_chat_scheduled",
    "video_chat_started",
    "video_chat_ended",
    "video_chat_participants_invited",
    "web_app_data",
    "successful_payment",
    "refunded_payment",
    "invoice",
    "passport_data",
)

# Update fields that are never a user's turn, with the reason given.
_IGNORED_UPDATES = (
    ("edited_message", "edited message"),
    ("channel_post", "channel post"),
    ("edited_channel_post", "edited channel post"),
    ("my_chat_member", "bot membership change"),
    ("chat_member", "chat member change"),
    ("chat_join_request", "chat join request"),
    ("business_message", "business message"),
    ("edited_business_message", "edited business message"),
    ("inline_query", "inline query"),
    ("chosen_inline_result", "inline result"),
    ("message_reaction", "message reaction"),
    ("message_reaction_count", "message reaction count"),
    ("poll", "poll state"),
    ("poll_answer", "poll answer"),
)

# After a removed mention, no space before these ("hi @bot, there" → "hi, there").
_CLOSING = frozenset(",.;:!?)…")

_CommandKind = Literal["ours", "other_bot"]
_COMMANDS = {
    "start": InboundKind.START,
    "stop": InboundKind.STOP,
    "restart": InboundKind.RESTART,
}


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is (from ``getMe``); ``username`` without the ``@``."""

    id: int
    username: str


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    group_mode: Literal["per_user", "per_chat"] = "per_user"
    """One conversation per user within a group, or one per chat (topic)."""
    forward_captions: bool = True
    """A media message's caption is sent as the user's text (else the text is empty)."""


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A callback query. ``data`` is the button's callback data (the adapter's token); resolve
    it, then build the event with :meth:`inbound`. Always answer ``callback_query_id``."""

    update_id: int
    callback_query_id: str
    data: str | None
    chat_id: int | None
    message_id: int | None
    conversation_key: str
    user_id: str
    address: dict[str, Any]
    context: dict[str, ContextScalar]

    def inbound(self, value: str) -> Inbound:
        """The event for the pressed chip whose value is ``value``."""
        return Inbound(
            event_id=f"tg:{self.update_id}",
            conversation_key=self.conversation_key,
            user_id=self.user_id,
            kind=InboundKind.BUTTON,
            text=value,
            address=dict(self.address),
            context=dict(self.context),
        )


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not an event for the bot; ``reason`` is for the debug log."""

    reason: str


def to_inbound(
    update: Update, bot: BotIdentity, options: NormalizeOptions
) -> Inbound | ButtonPress | Ignored:
    """Normalise one update. Never raises: odd updates are :class:`Ignored`."""
    try:
        if update.message is not None:
            return _from_message(update.update_id, update.message, bot, options)
        if update.callback_query is not None:
            return _from_callback(update, options)
        for field, reason in _IGNORED_UPDATES:
            if getattr(update, field, None) is not None:
                return Ignored(reason)
        return Ignored("unsupported update type")
    except Exception as exc:  # a malformed update must not stop intake
        return Ignored(f"malformed update ({type(exc).__name__})")


# --- messages -------------------------------------------------------------------------------


def _unserved_chat(chat: Chat | None, what: str) -> Ignored | None:
    """Why a ``what`` (a message, a button press) in ``chat`` is not for the bridge: there is
    no chat, or one neither private nor a group. None when it is."""
    if chat is None:
        return Ignored(f"{what} without a chat")
    if chat.type != Chat.PRIVATE and chat.type not in GROUP_TYPES:
        return Ignored(f"unsupported chat type {chat.type}")
    return None


def _from_message(
    update_id: int, msg: Message, bot: BotIdentity, options: NormalizeOptions
) -> Inbound | Ignored:
    chat = msg.chat
    if (unserved := _unserved_chat(chat, "message")) is not None:
        return unserved
    private = chat.type == Chat.PRIVATE
    if msg.sender_chat is not None:
        # Anonymous admins, posts on behalf of a channel, automatic forwards from a linked
        # channel (sent as the non-bot "Telegram" user 777000): nobody to answer.
        return Ignored("message sent on behalf of a chat")
    user = msg.from_user
    if user is None:
        return Ignored("message without a sender")
    if user.is_bot:
        return Ignored("message from a bot")

    thread = _thread(msg)
    key = _conversation_key(chat, thread, user, options)
    address = _address(chat, thread, None if private else msg.message_id)
    context = _context(user, chat)
    replies_to_bot = _replies_to_bot(msg, thread, bot)

    def event(kind: InboundKind, text: str, attachments: tuple[Attachment, ...] = ()) -> Inbound:
        return Inbound(
            event_id=f"tg:{update_id}",
            conversation_key=key,
            user_id=str(user.id),
            kind=kind,
            text=text,
            address=address,
            context=context,
            attachments=attachments,
        )

    if msg.text is not None:
        turn = _text_turn(msg.text, msg.entities, bot, private, replies_to_bot)
        return turn if isinstance(turn, Ignored) else event(*turn)

    kind_name = next((k for k in _CONTENT_KINDS if getattr(msg, k, None)), None)
    if kind_name is None:
        if any(getattr(msg, f, None) for f in _SERVICE_FIELDS):
            return Ignored("service message")
        return Ignored("message without text or known content")
    caption = msg.caption or ""
    mentions = _bot_mentions(caption, msg.caption_entities, bot) if caption else []
    if not private and not (mentions or replies_to_bot):
        return Ignored("group message not addressed to the bot")
    attachment = attachment_of(msg)
    if attachment is None:
        return event(InboundKind.UNSUPPORTED, kind_name)
    text = _edit(caption, [], mentions) if caption and options.forward_captions else ""
    return event(InboundKind.TEXT, text, (attachment,))


def _text_turn(
    text: str,
    entities: Sequence[MessageEntity],
    bot: BotIdentity,
    private: bool,
    replies_to_bot: bool,
) -> tuple[InboundKind, str] | Ignored:
    """What a text message asks of the bot: its kind and the text to send on."""
    mentions = _bot_mentions(text, entities, bot)
    command = _command(text, entities, bot)
    if command is not None and command[1] == "other_bot":
        if not private:
            return Ignored("command for another bot")
        command = None  # in a private chat everything is for us: plain text
    if not private and not (mentions or replies_to_bot or command is not None):
        return Ignored("group message not addressed to the bot")
    if command is not None:
        entity, _, name = command
        kind = _COMMANDS.get(name.lower())
        if kind is not None:
            return kind, _edit(text, [(entity.offset, entity.length, "")], mentions)
        # Any other command goes to Parloa as typed, without our "@username" suffix.
        edits = [(entity.offset, entity.length, "/" + name)]
        return InboundKind.TEXT, _edit(text, edits, mentions)
    stripped = _edit(text, [], mentions)
    if not stripped:
        return Ignored("empty message")
    return InboundKind.TEXT, stripped


# --- the common case, read straight from the JSON ---------------------------------------------

# Exactly these fields (or fewer) and the update is a plain text message in a private chat;
# anything else (replies, forwards, topics, media, groups, fields added to the Bot API later)
# takes the full path through python-telegram-bot's objects.
_PLAIN_MESSAGE = frozenset(
    {"message_id", "from", "chat", "date", "text", "entities", "link_preview_options"}
)
_PLAIN_USER = frozenset(
    {
        "id",
        "is_bot",
        "first_name",
        "last_name",
        "username",
        "language_code",
        "is_premium",
        "added_to_attachment_menu",
    }
)
_PLAIN_CHAT = frozenset({"id", "type", "first_name", "last_name", "username"})
_OPTIONAL_STRINGS = ("last_name", "username", "language_code")


def private_text(data: Any, bot: BotIdentity) -> Inbound | None:
    """A text message in a private chat, read from the update's JSON without building
    python-telegram-bot's objects for it (a large share of the bridge's CPU per message went
    there: docs/benchmarks.md, "Telegram adapter").
    Returns what ``to_inbound(Update.de_json(data))`` returns for it, or None for anything
    else, which the caller then reads the full way (including every update to ignore)."""
    if type(data) is not dict or data.keys() != {"update_id", "message"}:
        return None
    msg, update_id = data["message"], data["update_id"]
    if type(update_id) is not int or type(msg) is not dict or not msg.keys() <= _PLAIN_MESSAGE:
        return None
    chat, user, text = msg.get("chat"), msg.get("from"), msg.get("text")
    if (
        type(text) is not str
        or type(msg.get("message_id")) is not int
        or type(msg.get("date")) is not int
        or type(chat) is not dict
        or not chat.keys() <= _PLAIN_CHAT
        or chat.get("type") != Chat.PRIVATE
        or type(chat.get("id")) is not int
        or type(user) is not dict
        or not user.keys() <= _PLAIN_USER
        or type(user.get("id")) is not int
        or user.get("is_bot") is not False
        or type(user.get("first_name")) is not str
        or any(type(user.get(k, "")) is not str for k in _OPTIONAL_STRINGS)
        or type(user.get("is_premium", False)) is not bool
    ):
        return None
    raw_entities = msg.get("entities", [])
    if type(raw_entities) is not list or not all(type(e) is dict for e in raw_entities):
        return None
    try:
        entities = [MessageEntity.de_json(e, None) for e in raw_entities]
    except Exception:
        return None  # the full path says why it cannot be read
    turn = _text_turn(text, entities, bot, private=True, replies_to_bot=False)
    if isinstance(turn, Ignored):
        return None
    kind, event_text = turn
    return Inbound(
        event_id=f"tg:{update_id}",
        # A private chat's key does not depend on the group options.
        conversation_key=conversation_key_values(
            chat["id"], Chat.PRIVATE, None, user["id"], NormalizeOptions()
        ),
        user_id=str(user["id"]),
        kind=kind,
        text=event_text,
        address=address_values(chat["id"], Chat.PRIVATE, None, None),
        context=context_values(
            Chat.PRIVATE,
            None,
            user["first_name"],
            user.get("last_name"),
            user.get("username"),
            user.get("language_code"),
            user.get("is_premium"),
        ),
    )


def _thread(msg: Message) -> int | None:
    """The forum topic, only for topic messages: in other groups ``message_thread_id`` names a
    reply chain, which is no place to send to."""
    if msg.is_topic_message and msg.message_thread_id is not None:
        return msg.message_thread_id
    return None


def _conversation_key(chat: Chat, thread: int | None, user: User, options: NormalizeOptions) -> str:
    return conversation_key_values(chat.id, chat.type, thread, user.id, options)


def conversation_key_values(
    chat_id: int, chat_type: str, thread: int | None, user_id: int, options: NormalizeOptions
) -> str:
    if chat_type == Chat.PRIVATE:
        return f"{chat_id}"
    if options.group_mode == "per_chat":
        return f"{chat_id}:{thread or 0}"
    return f"{chat_id}:{thread or 0}:{user_id}"


def _address(chat: Chat, thread: int | None, reply_to: int | None) -> dict[str, Any]:
    return address_values(chat.id, chat.type, thread, reply_to)


def address_values(
    chat_id: int, chat_type: str, thread: int | None, reply_to: int | None
) -> dict[str, Any]:
    return {
        "chat_id": chat_id,
        "chat_type": str(chat_type),
        "thread_id": thread,
        "reply_to_message_id": reply_to,
    }


def _context(user: User, chat: Chat) -> dict[str, ContextScalar]:
    return context_values(
        chat.type,
        chat.title,
        user.first_name,
        user.last_name,
        user.username,
        user.language_code,
        user.is_premium,
    )


def context_values(
    chat_type: str,
    chat_title: str | None,
    first_name: str,
    last_name: str | None,
    username: str | None,
    language_code: str | None,
    is_premium: bool | None,
) -> dict[str, ContextScalar]:
    context: dict[str, ContextScalar] = {"platform": PLATFORM, "chatType": str(chat_type)}
    name = " ".join(p for p in (first_name, last_name) if p).strip()
    if name:
        context["userName"] = name
    if username:
        context["userHandle"] = username
    if language_code:
        context["languageCode"] = language_code
    if is_premium is not None:
        context["isPremium"] = bool(is_premium)
    if chat_type in GROUP_TYPES and chat_title:
        context["chatTitle"] = chat_title
    return context


def _replies_to_bot(msg: Message, thread: int | None, bot: BotIdentity) -> bool:
    replied = msg.reply_to_message
    if replied is None:
        return False
    if thread is not None and replied.message_id == thread:
        return False  # the implicit reply to a topic's first message, not a real reply
    author = replied.from_user
    return author is not None and author.id == bot.id


def _bot_mentions(
    text: str, entities: Sequence[MessageEntity], bot: BotIdentity
) -> list[MessageEntity]:
    """The entities that mention this bot: ``@username`` (any case) or a text mention."""
    handle = "@" + bot.username.lstrip("@").lower()
    found = []
    for entity in entities:
        if entity.type == MessageEntity.MENTION:
            ours = _slice(text, entity.offset, entity.length).lower() == handle
        elif entity.type == MessageEntity.TEXT_MENTION:
            ours = entity.user is not None and entity.user.id == bot.id
        else:
            ours = False
        if ours:
            found.append(entity)
    return found


def _command(
    text: str, entities: Sequence[MessageEntity], bot: BotIdentity
) -> tuple[MessageEntity, _CommandKind, str] | None:
    """The command at the start of ``text``: its entity, whom it addresses, its name."""
    entity = next(
        (e for e in entities if e.type == MessageEntity.BOT_COMMAND and e.offset == 0), None
    )
    if entity is None:
        return None
    name, _, target = _slice(text, entity.offset, entity.length).lstrip("/").partition("@")
    if target and target.lower() != bot.username.lstrip("@").lower():
        return entity, "other_bot", name
    return entity, "ours", name


# --- UTF-16 aware text editing (entity offsets count UTF-16 code units) -------------------


def _units(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _text(units: bytes) -> str:
    return units.decode("utf-16-le", "surrogatepass")


def _slice(text: str, offset: int, length: int) -> str:
    return _text(_units(text)[2 * offset : 2 * (offset + length)])


def _edit(
    text: str, replacements: list[tuple[int, int, str]], removals: Sequence[MessageEntity]
) -> str:
    """``text`` with spans replaced and bot mentions removed, whitespace around a removed
    mention collapsed ("hi @bot there" → "hi there", "@bot, hi" → "hi"); ends stripped."""
    edits = sorted(
        [(off, length, repl, False) for off, length, repl in replacements]
        + [(e.offset, e.length, "", True) for e in removals]
    )
    units = _units(text)
    out = ""
    position = 0
    join = False  # a mention was removed just before the next piece
    leading = False  # ... and only whitespace precedes it: drop "," or ":" after it too
    for offset, length, replacement, is_mention in edits:
        if offset < position:
            continue  # overlapping entities: keep the first
        out, join, leading = _append(out, _text(units[2 * position : 2 * offset]), join, leading)
        if is_mention:
            leading = leading or not out.strip()
            join = True
        else:
            out, join, leading = _append(out, replacement, join, leading)
        position = offset + length
    out, _, _ = _append(out, _text(units[2 * position :]), join, leading)
    return out.strip()


def _append(out: str, piece: str, join: bool, leading: bool) -> tuple[str, bool, bool]:
    """``out + piece``, collapsing whitespace where a mention was removed; the flags stay set
    while the pieces appended are blank."""
    if not join:
        return out + piece, False, False
    piece = piece.lstrip(" \t,:;" if leading else " \t")
    if not piece:
        return out, join, leading
    out = out.rstrip(" \t")
    if out and not out[-1].isspace() and not piece[0].isspace() and piece[0] not in _CLOSING:
        return out + " " + piece, False, False
    return out + piece, False, False


# --- button presses -------------------------------------------------------------------------


def _from_callback(update: Update, options: NormalizeOptions) -> ButtonPress | Ignored:
    query = update.callback_query
    assert query is not None
    user = query.from_user
    if user is None:
        return Ignored("button press without a sender")
    if user.is_bot:
        return Ignored("button press from a bot")
    held = query.message
    if held is None:
        return Ignored("button press on an inline message")
    chat = held.chat
    if (unserved := _unserved_chat(chat, "button press")) is not None:
        return unserved
    private = chat.type == Chat.PRIVATE
    # PTB parses an inaccessible message (date 0) as a Message too: ask is_accessible.
    if isinstance(held, Message) and held.is_accessible:
        thread = _thread(held)
    elif chat.is_forum:
        # Too old to read (48 h): its topic is unknown, so is the conversation.
        return Ignored("button press on an inaccessible message in a forum")
    else:
        thread = None
    return ButtonPress(
        update_id=update.update_id,
        callback_query_id=query.id,
        data=query.data,
        chat_id=chat.id,
        message_id=held.message_id,
        conversation_key=_conversation_key(chat, thread, user, options),
        user_id=str(user.id),
        # In groups the answer replies to the message that carried the buttons.
        address=_address(chat, thread, None if private else held.message_id),
        context=_context(user, chat),
    )
