"""The operator page's recovery controls (console/recovery_api.py): Replay and Discard beside
each dead letter, and Reroute unmatched. Pure HTML and the script that posts the buttons."""

from html import escape

SCRIPT = """
for (const button of document.querySelectorAll("button[data-replay]")) {
  button.addEventListener("click", () => {
    recoverWith(button, "/dead-letters/" + encodeURIComponent(button.dataset.replay) + "/replay",
      {}, (a) => "replayed: routing run " + a.route_run_id);
  });
}
for (const button of document.querySelectorAll("button[data-discard]")) {
  button.addEventListener("click", () => {
    const reason = window.prompt("Why discard this dead letter? (kept on the run)", "");
    if (reason === null || reason.trim() === "") return;
    recoverWith(button, "/dead-letters/" + encodeURIComponent(button.dataset.discard) + "/discard",
      {reason: reason}, () => "discarded");
  });
}
for (const button of document.querySelectorAll("button[data-reroute-unmatched]")) {
  button.addEventListener("click", () => {
    recoverWith(button, "/reroute/unmatched", {dry_run: false},
      (a) => "rerouted " + a.rerouted + " deliveries");
  });
}
async function recoverWith(button, path, body, done) {
  const outcome = button.parentElement.querySelector(".outcome");
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Idlehook-CSRF": "1"},
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  outcome.textContent = response.ok ? done(answer)
    : answer.message || "failed (" + response.status + ")";
  if (response.ok) {
    button.parentElement.querySelectorAll("button").forEach((b) => (b.disabled = true));
  }
}
"""


def dead_letter_buttons(run_id: int) -> str:
    shown = escape(str(run_id))
    return (
        f'<button data-replay="{shown}">Replay</button>'
        f'<button data-discard="{shown}">Discard</button><span class="outcome"></span>'
    )


def reroute_unmatched(count: int) -> str:
    """The button, while deliveries no rule matched wait that a current route wants."""
    if not count:
        return ""
    shown = f"{count}+" if count >= 1000 else str(count)
    return (
        f'<p id="unmatched">Deliveries no rule matched that a current route now wants: {shown} '
        '<button data-reroute-unmatched="1">Reroute unmatched</button>'
        '<span class="outcome"></span></p>'
    )
