"""Each admin page's template named once, not looked up among candidates on every load.

Given no template of its own, a `ModelAdmin` view hands `TemplateResponse` a list of
candidates (`admin/<app>/<model>/change_list.html`, `admin/<app>/change_list.html`,
`admin/change_list.html`), and Django's `select_template` keeps the exception of every
candidate missing. That exception's traceback holds `select_template`'s own frame, whose
locals hold the list of exceptions: a reference cycle that, through the frames of its
callers, keeps the whole page (the response, its context, a changelist's rows) until the
cyclic garbage collector runs, on whichever thread next crosses its threshold, the
event loop's included, where it pauses every stream. `first_templates` names, for each
page of an admin that has no template set, the candidate that exists, found on its first
use; the page then loads one template by name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.template.loader import select_template

# The attributes of a ModelAdmin naming a page's template, and the page's file name.
PAGES = {
    "change_list_template": "change_list.html",
    "change_form_template": "change_form.html",
    "add_form_template": "change_form.html",
    "delete_confirmation_template": "delete_confirmation.html",
    "delete_selected_confirmation_template": "delete_selected_confirmation.html",
    "object_history_template": "object_history.html",
    "popup_response_template": "popup_response.html",
}


class FirstTemplate:
    """The name of the first of Django's candidates for one page that exists, looked up
    on first use and then kept on the admin (which hides this descriptor from then on)."""

    def __init__(self, attribute: str, file_name: str) -> None:
        self.attribute = attribute
        self.file_name = file_name

    def __get__(self, model_admin: admin.ModelAdmin[Any] | None, owner: type) -> Any:
        if model_admin is None:
            return self
        opts = model_admin.opts
        found = select_template(
            [
                f"admin/{opts.app_label}/{opts.model_name}/{self.file_name}",
                f"admin/{opts.app_label}/{self.file_name}",
                f"admin/{self.file_name}",
            ]
        )
        name = found.origin.template_name
        vars(model_admin)[self.attribute] = name
        return name


A = TypeVar("A", bound=type[admin.ModelAdmin[Any]])


def first_templates(cls: A) -> A:
    """Class decorator: every page template `cls` leaves unset found once (module docstring)."""
    for attribute, file_name in PAGES.items():
        if getattr(cls, attribute, None) is None:
            setattr(cls, attribute, FirstTemplate(attribute, file_name))
    return cls
