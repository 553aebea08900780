import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    # Anonymous visitors own conversations through a random key in a signed cookie.
    anonymous_key = models.CharField(max_length=64, blank=True, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # Deleted by its owner: hidden from them, kept (with its usage and cost) for reports.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Its title and system prompt were removed (`chat_purge`); its usage stays.
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            # The changelist orders by updated_at then id (a UUID, so not in the table's
            # own order): both in the index, or every load sorts every conversation.
            models.Index(fields=["updated_at", "id"], name="conversation_updated_id"),
            models.Index(fields=["model", "updated_at", "id"], name="conversation_model_updated"),
            models.Index(fields=["purged_at", "updated_at"], name="conversation_unpurged"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(owner__isnull=False) | ~Q(anonymous_key=""),
                name="conversation_has_owner",
            )
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETED = "completed"
        INCOMPLETE = "incomplete"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL_STATUSES = frozenset(
        {Status.COMPLETED, Status.INCOMPLETE, Status.FAILED, Status.CANCELLED}
    )
    UNFINISHED_STATUSES = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.COMPLETED, db_index=True
    )
    provider = models.CharField(max_length=20, blank=True)
    api = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=100, blank=True, db_index=True)
    response_id = models.CharField("upstream response id", max_length=200, blank=True)
    finish_reason = models.CharField(max_length=50, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    ttft_ms = models.PositiveIntegerField("time to first token (ms)", null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    error_type = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    # A reply that is more than text is an ordered list of parts: reasoning, tool calls and
    # their results, web searches, text, citations (`chat.llm.context` names their fields).
    # Written once with the row's outcome, read with it: to show, export and replay the
    # reply, never queried into. Null for a reply that is text only (`content` is all of it).
    parts = models.JSONField(null=True, blank=True)
    # Each upstream call of a turn that made several (a tool loop): its usage, response id,
    # finish reason, web searches and cost. The row's tokens and cost are their sums.
    rounds = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # When a worker started streaming it: a deferred turn may wait long before that, so
    # staleness is measured from here, not from `created_at`.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Who produces it (`chat.turns.workers`: host, process and boot) and until when its
    # lease holds: a turn whose producer stopped renewing is finished by another worker,
    # or by the same process restarted, within seconds. Nullable: added to a big table
    # without rewriting it (SQLite rebuilds a table for a NOT NULL column).
    worker = models.CharField(max_length=120, null=True, blank=True)  # noqa: DJ001
    lease_until = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Regenerate and edit make a new version of the last turn (a user row and its reply).
    # Earlier versions stay, billed and in the admin, but are never sent as context again.
    version_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="later_versions",
        help_text="The first version of this turn's message, when this is a later one.",
    )
    superseded_at = models.DateTimeField(
        null=True, blank=True, help_text="When a newer version of this turn replaced it."
    )
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When its text was removed (chat_purge); usage stays."
    )

    class Meta:
        ordering = ["id"]
        # The admin's filters and orderings, each with the newest-first id order its
        # changelist pages by (migration 0010 adds them without locking the table).
        indexes = [
            models.Index(fields=["role", "created_at"], name="message_role_created"),
            models.Index(fields=["status", "id"], name="message_status_id"),
            models.Index(fields=["model", "id"], name="message_model_id"),
            models.Index(fields=["provider", "id"], name="message_provider_id"),
            models.Index(fields=["api", "id"], name="message_api_id"),
            # Rare rows, newest first: partial indexes hold only them.
            models.Index(
                fields=["id"], condition=Q(usage_estimated=True), name="message_estimated_id"
            ),
            models.Index(
                fields=["id"], condition=Q(superseded_at__isnull=False), name="message_superseded"
            ),
            models.Index(fields=["finished_at"], name="message_finished"),
            models.Index(fields=["cost"], name="message_cost"),
            # Retention finds the oldest text not yet purged without reading purged rows.
            models.Index(fields=["purged_at", "created_at"], name="message_unpurged"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"


class ModelPrice(models.Model):
    """Price list entry; a message's cost is computed from the entry valid when it finished."""

    model = models.CharField(max_length=100, db_index=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Leave empty when the model has no cached-input discount.",
    )
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    valid_from = models.DateTimeField()

    class Meta:
        ordering = ["model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "valid_from"], name="one_price_per_instant")
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from:%Y-%m-%d}"


class ToolPrice(models.Model):
    """A tool's price per 1,000 calls, by the name the model calls it (`order_status`,
    `crm__lookup`, `web_search` for hosted searches); a tool without one is free (hosted
    web search: `CHAT_WEB_SEARCH_USD_PER_1000`). A call is priced once, when its turn
    finishes, with the entry valid then, and the price is stored on the call's part."""

    tool = models.CharField(max_length=100, db_index=True)
    per_thousand_calls = models.DecimalField(max_digits=12, decimal_places=6)
    valid_from = models.DateTimeField()

    class Meta:
        ordering = ["tool", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["tool", "valid_from"], name="one_tool_price_instant"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} from {self.valid_from:%Y-%m-%d}"


class ApiToken(models.Model):
    """A personal token for scripts (`Authorization: Bearer …`); only its hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Django would say "Api token(s)".
        verbose_name = "API token"
        verbose_name_plural = "API tokens"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw_token: str) -> str:
        return hashlib.sha256(raw_token.encode()).hexdigest()


class Budget(models.Model):
    """A person's own spending limit, in place of `CHAT_BUDGET_USD` (see `chat.spend.budgets`)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="chat_budget",
    )
    limit_usd = models.DecimalField(
        "limit (USD)",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Per budget period. Empty: the default (CHAT_BUDGET_USD).",
    )
    unlimited = models.BooleanField(
        "no limit", default=False, help_text="This person may spend without limit."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(unlimited=False) | Q(limit_usd__isnull=True),
                name="budget_limit_or_unlimited",
            ),
            models.CheckConstraint(
                condition=Q(limit_usd__isnull=True) | Q(limit_usd__gte=0),
                name="budget_limit_not_negative",
            ),
        ]

    def __str__(self) -> str:
        if self.unlimited:
            return "no limit"
        return "default" if self.limit_usd is None else f"${self.limit_usd} per period"


# Upper bounds (ms) of the usage ledger's time-to-first-token buckets; one more bucket
# counts everything slower. Fixed: changing them needs a migration and a rebuild.
TTFT_BUCKETS_MS = (50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000, 30000)
TTFT_FIELDS = tuple(f"ttft_le_{edge}" for edge in TTFT_BUCKETS_MS) + ("ttft_over",)


class DailyUsage(models.Model):
    """The usage ledger: one row per day (in `TIME_ZONE`), person, model, provider and API,
    holding the sums of the assistant messages that reached a final status that day.

    Written in the transaction that finishes each turn (`chat.spend.ledger`), so it never
    drifts from the messages; every usage page, command and budget reads it instead of
    scanning messages. Money is kept in whole hundred-millionths of a dollar (the
    precision of `Message.cost`) so sums are exact on every database. A person deleted
    later keeps their rows: no cent ever leaves the ledger.
    """

    day = models.DateField()
    # 0 for an anonymous visitor (then `anonymous_key` says which). Not a foreign key: a
    # deleted account's spend stays, under its old id.
    user_id = models.BigIntegerField(default=0)
    anonymous_key = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=20, blank=True)
    api = models.CharField(max_length=20, blank=True)
    requests = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    incomplete = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    estimated = models.IntegerField(
        default=0, help_text="Requests whose usage was estimated, not counted upstream."
    )
    cost_e8 = models.BigIntegerField("cost (USD × 10⁸)", default=0)
    # Time to first token: how many requests fell in each bucket of `TTFT_BUCKETS_MS`.
    ttft_le_50 = models.IntegerField(default=0)
    ttft_le_100 = models.IntegerField(default=0)
    ttft_le_200 = models.IntegerField(default=0)
    ttft_le_300 = models.IntegerField(default=0)
    ttft_le_500 = models.IntegerField(default=0)
    ttft_le_1000 = models.IntegerField(default=0)
    ttft_le_2000 = models.IntegerField(default=0)
    ttft_le_3000 = models.IntegerField(default=0)
    ttft_le_5000 = models.IntegerField(default=0)
    ttft_le_10000 = models.IntegerField(default=0)
    ttft_le_30000 = models.IntegerField(default=0)
    ttft_over = models.IntegerField(default=0)

    class Meta:
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user_id", "anonymous_key", "model", "provider", "api"],
                name="daily_usage_key",
            )
        ]
        indexes = [models.Index(fields=["user_id", "day"], name="daily_usage_person_day")]

    def __str__(self) -> str:
        who = f"user {self.user_id}" if self.user_id else "anonymous"
        return f"{self.day} {who} {self.model}"


class GroupBudget(models.Model):
    """A spending limit shared by the members of a Django group: their spend together per
    budget period. A person is refused when they or any of their groups is over."""

    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, primary_key=True, related_name="chat_budget"
    )
    limit_usd = models.DecimalField(
        "limit (USD)",
        max_digits=12,
        decimal_places=2,
        help_text="Per budget period (CHAT_BUDGET_PERIOD), for the group's members together.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(limit_usd__gte=0), name="group_budget_limit_not_negative"
            )
        ]

    def __str__(self) -> str:
        return f"${self.limit_usd} per period"


class DailyToolUsage(models.Model):
    """Tool calls per day (in `TIME_ZONE`), tool and who ran it (`python`, `mcp:<server>`,
    `provider` for hosted web search, `none` for a tool the model invented): counted in the
    transaction that finishes their turn (`chat.spend.tool_calls`), read by the usage
    dashboard. Only ever added to."""

    day = models.DateField()
    tool = models.CharField(max_length=100)
    runner = models.CharField(max_length=60)
    calls = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0, help_text="All the calls' time together.")
    cost_e8 = models.BigIntegerField(
        default=0, help_text="The calls' prices together, in hundred-millionths of a dollar."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "tool", "runner"], name="one_tool_day")
        ]

    def __str__(self) -> str:
        return f"{self.tool} on {self.day}: {self.calls}"


class Attachment(models.Model):
    """A file a person uploaded to show the model: its bytes live in the `attachments`
    storage (`chat.files.storage`), never in a row. One person's identical uploads are one
    row (`sha256`); a message refers to it through `MessageAttachment`."""

    class Kind(models.TextChoices):
        IMAGE = "image"
        PDF = "pdf"
        TEXT = "text"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="chat_attachments",
    )
    anonymous_key = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=200, help_text="Made safe: no path, control or bidi.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField(help_text="Bytes stored (after re-encoding).")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, help_text="Of the bytes as uploaded.")
    storage_key = models.CharField(max_length=255, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Its bytes were removed from storage (conversation deleted, retention, never sent).
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "created_at"], name="attachment_owner_created"),
            models.Index(fields=["anonymous_key", "created_at"], name="attachment_anon_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(owner__isnull=False) | ~Q(anonymous_key=""),
                name="attachment_has_owner",
            ),
            # Dedupe: a person's identical live uploads are one row.
            models.UniqueConstraint(
                fields=["owner", "sha256"],
                condition=Q(owner__isnull=False, removed_at__isnull=True),
                name="attachment_one_per_user_sha256",
            ),
            models.UniqueConstraint(
                fields=["anonymous_key", "sha256"],
                condition=Q(owner__isnull=True, removed_at__isnull=True),
                name="attachment_one_per_visitor_sha256",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MessageAttachment(models.Model):
    """A file sent with a user message, in the order it was attached."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attached")
    attachment = models.ForeignKey(Attachment, on_delete=models.CASCADE, related_name="uses")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["message", "position"]
        constraints = [
            models.UniqueConstraint(fields=["message", "attachment"], name="attached_once")
        ]

    def __str__(self) -> str:
        return f"{self.attachment_id} on message {self.message_id}"
