"""The chat of a conversation the bot starts (the admin API's start and broadcast): getChat,
paced within the bot's budget, and what Telegram's answer means. Telegram lets a bot write
first only to users who started it: for any other user getChat answers "chat not found"."""

from __future__ import annotations

import re

from telegram import Chat, ChatFullInfo
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from adapters.telegram.bot import BridgeBot, retry_seconds
from adapters.telegram.budgets import SendBudgets
from adapters.telegram.normalize import (
    GROUP_TYPES,
    Ignored,
    NormalizeOptions,
    address_values,
    context_values,
    conversation_key_values,
)
from bridge.channel import Recipient, RecipientGone, RecipientUnavailable, RecipientUnknown

#: Telegram's flood control named no usable wait: ask again after this long.
DEFAULT_FLOOD_WAIT_SECONDS = 1.0
_CHAT_ID = re.compile(r"-?[1-9][0-9]{0,19}")


def chat_id_of(who: str) -> int:
    """A chat id as the operator wrote it (a user's private chat id is the user's id)."""
    text = who.strip()
    if not _CHAT_ID.fullmatch(text):
        raise RecipientUnknown(f"not a Telegram chat id: {who!r}")
    return int(text)


async def look_up(
    bot: BridgeBot, budgets: SendBudgets, who: str, options: NormalizeOptions
) -> Recipient:
    """``who``'s chat as a :class:`Recipient`; raises RecipientUnknown, RecipientGone or
    RecipientUnavailable."""
    chat_id = chat_id_of(who)
    # A broadcast looks up many chats in a row: within the bot's budget, with its sends.
    await budgets.acquire_lookup()
    try:
        chat = await bot.get_chat(chat_id)
    except RetryAfter as exc:
        seconds = retry_seconds(exc) or DEFAULT_FLOOD_WAIT_SECONDS
        raise RecipientUnavailable(f"Telegram said 429: {exc}", seconds) from None
    except Forbidden as exc:  # kicked from the group, or the user deactivated
        raise RecipientGone(exc.message) from None
    except ChatMigrated as exc:
        raise RecipientUnknown(f"the group is now chat {exc.new_chat_id}") from None
    except BadRequest as exc:  # "chat not found": the user never started the bot
        raise RecipientUnknown(exc.message) from None
    except TelegramError as exc:  # NetworkError and TimedOut included
        raise RecipientUnavailable(f"Telegram request failed: {exc}") from None
    found = recipient_of(chat, options)
    if isinstance(found, Ignored):
        raise RecipientUnknown(found.reason)
    return found


def recipient_of(chat: Chat | ChatFullInfo, options: NormalizeOptions) -> Recipient | Ignored:
    """Where a conversation the bot starts in ``chat`` (as getChat describes it) goes: the
    key, address and context a message from that chat gets from :func:`to_inbound`, so that
    the user's reply continues the conversation. A private chat, or a group whose members
    share one conversation (``per_chat``); not a group in ``per_user`` mode (no member to
    start it for), nor a channel."""
    if chat.type == Chat.PRIVATE:
        user_id = chat.id
    elif chat.type in GROUP_TYPES and options.group_mode == "per_chat":
        user_id = chat.id  # nobody in the group spoke: the chat itself is the requester
    elif chat.type in GROUP_TYPES:
        return Ignored("a group whose conversations are each member's (group_mode per_user)")
    else:
        return Ignored(f"a {chat.type} chat, where the bot does not converse")
    return Recipient(
        conversation_key=conversation_key_values(chat.id, chat.type, None, user_id, options),
        user_id=str(user_id),
        address=address_values(chat.id, chat.type, None, None),
        context=context_values(
            chat.type,
            chat.title,
            chat.first_name or "",
            chat.last_name,
            chat.username,
            None,
            None,
        ),
    )
