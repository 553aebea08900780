"""Admin for people's budgets: each person's own limit (or none) on their user page, and
their limit and spend this period in the user list."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import BigIntegerField, QuerySet
from django.db.models.functions import Coalesce
from django.forms.formsets import BaseFormSet
from django.http import HttpRequest

from chat.admin.display import cut, short_time
from chat.admin.pages import first_templates
from chat.models import Budget, GroupBudget
from chat.money import usd
from chat.spend.budgets import budget_forget, limit_of, period_spend
from chat.spend.ledger import E8
from chat.spend.periods import budget_period

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_stubs_ext import WithAnnotations

else:
    User = get_user_model()


class PeriodSpend(TypedDict):
    """What `PersonAdmin.get_queryset` adds to each row."""

    period_spend: int  # USD × 10⁸, as the ledger keeps it


class BudgetInline(admin.TabularInline[Budget, User]):
    """Shown right after the username (templates/admin/auth/user/change_form.html): a
    table row of two fields, not a stacked form titled "Spending budget: #1"."""

    model = Budget
    can_delete = True
    extra = 1
    max_num = 1
    verbose_name = "spending budget"
    verbose_name_plural = "spending budget"
    fields = ["limit_usd", "unlimited"]


admin.site.unregister(User)


@admin.register(User)
@first_templates
class PersonAdmin(UserAdmin[User]):
    inlines = [*UserAdmin.inlines, BudgetInline]
    list_display = [
        "username",
        "email_address",
        "is_staff",
        "budget",
        "spent_this_period",
        "last_sign_in",
    ]
    list_select_related = ["chat_budget"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # The period's spend in the changelist's own query (a subquery evaluated for the
        # page's rows only): no query per row, no scan of everyone's messages.
        # From the usage ledger: a few rows per person per day, not their messages.
        spend = Coalesce(period_spend(), 0, output_field=BigIntegerField())
        return super().get_queryset(request).annotate(period_spend=spend)

    @admin.display(description="email address", ordering="email")
    def email_address(self, user: User) -> str:
        return cut(user.email)

    @admin.display(description="last sign-in", ordering="last_login")
    def last_sign_in(self, user: User) -> str:
        if user.last_login is None:
            return "never"
        return short_time(user.last_login)

    @admin.display(description="budget")
    def budget(self, user: User) -> str:
        limit = limit_of(getattr(user, "chat_budget", None))
        return "no limit" if limit is None else f"{usd(limit)} / {budget_period().name}"

    @admin.display(description="spent this period", ordering="period_spend")
    def spent_this_period(self, user: WithAnnotations[User, PeriodSpend]) -> str:
        return usd(Decimal(user.period_spend) / E8)

    def save_related(
        self,
        request: HttpRequest,
        form: forms.ModelForm[User],
        formsets: list[BaseFormSet[Any]],
        change: bool,
    ) -> None:
        super().save_related(request, form, formsets, change)
        # Every worker re-reads the limit within a minute; this one at once.
        budget_forget(form.instance.pk)


class GroupBudgetInline(admin.StackedInline[GroupBudget, Group]):
    model = GroupBudget
    can_delete = True
    extra = 1
    max_num = 1
    verbose_name = "shared spending budget"
    verbose_name_plural = "shared spending budget"
    fields = ["limit_usd"]


admin.site.unregister(Group)


@admin.register(Group)
@first_templates
class TeamAdmin(GroupAdmin):
    """Django's group admin with the group's shared budget: its members' spend together
    per budget period."""

    inlines = [*GroupAdmin.inlines, GroupBudgetInline]
    list_display = ["name", "budget"]
    list_select_related = ["chat_budget"]

    @admin.display(description="budget")
    def budget(self, group: Group) -> str:
        budget = getattr(group, "chat_budget", None)
        if budget is None:
            return "none"
        return f"{usd(budget.limit_usd)} / {budget_period().name} for all members"

    def save_related(
        self,
        request: HttpRequest,
        form: forms.ModelForm[Group],
        formsets: list[BaseFormSet[Any]],
        change: bool,
    ) -> None:
        super().save_related(request, form, formsets, change)
        # Members' cached limits name their groups' limits: each worker re-reads them
        # within a minute, this one now.
        for user_id in form.instance.user_set.values_list("pk", flat=True):
            budget_forget(user_id)
