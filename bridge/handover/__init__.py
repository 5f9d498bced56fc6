"""Human handover: a live agent takes over a conversation, at a desk.

    Parloa's payload {"handover": ...}  ──► worker: HandedOver, the user's notice, and a
    or a user command ("/agent")            "handover.started" event for the desk (outbox)
    the user's messages                 ──► inbox ──► worker ──► "handover.user_message" ──► desk
    an agent's act at the desk          ──► Agents.act ──► inbox (deduplicated) ──► worker
                                            ──► the user's channel (outbox) ──► adapter
    Resolve / the agent timeout / idle  ──► HandoverClosed ──► back to the bot, or ended

Everything crosses the same inbox and outbox as the bot's messages, so a handover keeps the
conversation's order and survives crashes, restarts and replicas.

    desk.py     the Desk interface, what a desk is handed (DeskDelivery), the errors
    events.py   the desk events (wire form) and the texts the user sees: pure functions
    agents.py   Agents: an agent's act into the conversation's inbox; lookups for desks
    slack.py    the "slack" desk: a thread per handover in an agents' channel
    webhook.py  the "webhook" desk: signed events out, a signed intake in
    console.py  the "console" desk: the operator console's agent inbox
    desks.py    one desk per bot with handover.desk set, built from the configuration
"""
