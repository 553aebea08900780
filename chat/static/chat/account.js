// Who is signed in and what they have spent: the sidebar's account box.
//
//   GET /api/account   {user, budget: {limit, spent, period, resets_at, exceeded,
//                                       warning, warn_percent, groups: [{name, limit,
//                                       spent, exceeded}]}}
//
// budgetText is pure (tested with `node --test`); showBudget paints it.

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const PER = { day: "today", week: "this week", month: "this month" };

// The limit closest to being reached: the person's own, or one of their groups' (whose
// members spend it together).
function tightest(budget) {
  const limits = (budget.groups ?? []).map((group) => ({ ...group, group: group.name }));
  if (budget.limit !== null && budget.limit !== undefined) {
    limits.unshift({ group: null, limit: budget.limit, spent: budget.spent });
  }
  let best = null;
  for (const entry of limits) {
    const limit = Number(entry.limit);
    const spent = Number(entry.spent);
    const used = limit > 0 ? spent / limit : Infinity;
    if (best === null || used > best.used) best = { group: entry.group, limit, spent, used };
  }
  return best;
}

// "$1.25 of $5.00 this month", or "$1.25 spent this month" with no limit; the bar's
// fraction; `warning` from CHAT_BUDGET_WARN_PERCENT on, `exceeded` at the limit.
export function budgetText(budget) {
  if (!budget) return null;
  const when = PER[budget.period] ?? `this ${budget.period}`;
  const binding = tightest(budget);
  if (binding === null) {
    const spent = money.format(Number(budget.spent));
    return { text: `${spent} spent ${when}`, fraction: null, exceeded: false, warning: false };
  }
  const fraction = Math.min(1, binding.used);
  const whose = binding.group === null ? "" : `${binding.group}: `;
  const amounts = `${money.format(binding.spent)} of ${money.format(binding.limit)} ${when}`;
  const warnAt = Number(budget.warn_percent ?? 80) / 100;
  const exceeded = binding.used >= 1 || Boolean(budget.exceeded);
  const warning = !exceeded && binding.used >= warnAt;
  let text = `${whose}${amounts}`;
  if (exceeded) text = `Budget reached: ${text}`;
  else if (warning) text = `${text} (${Math.floor(binding.used * 100)}% used)`;
  return { text, fraction, exceeded, warning };
}

export function showBudget(budget) {
  const box = document.getElementById("budget");
  const shown = budgetText(budget);
  if (!box || !shown) return;
  box.hidden = false;
  box.classList.toggle("budget-exceeded", shown.exceeded);
  box.classList.toggle("budget-warning", shown.warning);
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
