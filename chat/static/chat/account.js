// Who is signed in and what they have spent: the sidebar's account box.
//
//   GET /api/account   {user, budget: {limit, spent, period, resets_at, exceeded}}
//
// budgetText is pure (tested with `node --test`); showBudget paints it.

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const PER = { day: "today", week: "this week", month: "this month" };

// "$1.25 of $5.00 this month", or "$1.25 this month" with no limit; the bar's fraction.
export function budgetText(budget) {
  if (!budget) return null;
  const spent = Number(budget.spent);
  const when = PER[budget.period] ?? `this ${budget.period}`;
  if (budget.limit === null || budget.limit === undefined) {
    return { text: `${money.format(spent)} spent ${when}`, fraction: null, exceeded: false };
  }
  const limit = Number(budget.limit);
  const fraction = limit > 0 ? Math.min(1, spent / limit) : 1;
  const text = budget.exceeded
    ? `Budget reached: ${money.format(spent)} of ${money.format(limit)} ${when}`
    : `${money.format(spent)} of ${money.format(limit)} ${when}`;
  return { text, fraction, exceeded: Boolean(budget.exceeded) };
}

export function showBudget(budget) {
  const box = document.getElementById("budget");
  const shown = budgetText(budget);
  if (!box || !shown) return;
  box.hidden = false;
  box.classList.toggle("budget-exceeded", shown.exceeded);
  document.getElementById("budget-text").textContent = shown.text;
  const meter = document.getElementById("budget-meter");
  meter.hidden = shown.fraction === null;
  if (shown.fraction !== null) meter.value = shown.fraction;
  if (shown.exceeded) {
    const resets = new Date(budget.resets_at).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
    box.title = `New messages are refused until ${resets}.`;
  } else {
    box.removeAttribute("title");
  }
}

// After a turn: the spend it added (or another tab's), read back from the server.
export async function refreshAccount() {
  try {
    const response = await fetch("/api/account", {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (response.ok) showBudget((await response.json()).budget);
  } catch {
    // The next turn tries again; the figure is informative, the server enforces it.
  }
}
