"""Accessibility checked by a machine: axe-core (tests/browser/vendor/) run in the page a
test has open, its serious and critical violations reported one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


def axe_violations(page: Any) -> list[str]:
    """The serious and critical violations on the page as it is now (WCAG 2.2 A and AA and
    axe's best practices), as "rule (impact): selectors — help" lines."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate(
        """() => axe.run(document, {
            resultTypes: ["violations"],
            runOnly: {type: "tag", values: [
                "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]},
        })"""
    )
    return [
        f"{v['id']} ({v['impact']}): "
        + ", ".join(str(node["target"]) for node in v["nodes"][:5])
        + f" — {v['help']}"
        for v in results["violations"]
        if v["impact"] in BLOCKING
    ]


def assert_accessible(page: Any, where: str) -> None:
    found = axe_violations(page)
    assert not found, f"{where}: " + "\n".join(found)
