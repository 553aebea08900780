"""The admin: who spent what, on which model, when, and what went wrong.

One module per model, as Django's contrib apps do: conversations and messages are records,
so they are read-only (view and delete only), and so are attachments (a message's files
inline on its page); prices are editable; API tokens and people
with their budgets beside them. The usage dashboard and the CSV export are views of the
message admin, in modules of their own. Importing the package registers everything and
names the site (`site`).
"""

from chat.admin import (  # noqa: F401
    attachments,
    conversations,
    messages,
    people,
    prices,
    site,
    tokens,
)
