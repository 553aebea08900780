from django.contrib import admin

from chat.models import ApiToken, Conversation, Message, ModelPrice


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "status", "model", "content", "input_tokens", "output_tokens", "cost"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "model", "created_at", "updated_at"]
    list_filter = ["model", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["title"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "owner", "anonymous_key", "created_at", "updated_at"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "role",
        "status",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "ttft_ms",
        "created_at",
    ]
    list_filter = ["status", "role", "model", "provider", "created_at"]
    list_select_related = ["conversation"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "valid_from",
    ]
    search_fields = ["model"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
