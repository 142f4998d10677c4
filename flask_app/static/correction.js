// "Save correction" without leaving the results page: the form is posted as it is (CSRF token included) and the
// answer, saved or why not, is shown under the button. Without JavaScript the form posts and a page answers.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("correction-form");
  const status = document.getElementById("correction-status");
  if (!form || !status) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    status.className = "message corr-status";
    status.textContent = "Saving…";
    try {
      const response = await fetch(form.action, {
        method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin",
        headers: { "Accept": "application/json" },
      });
      let body = {};
      try { body = await response.json(); } catch (_) { /* a proxy's HTML error page */ }
      status.textContent = response.ok ? body.message : `Not saved: ${body.error || response.statusText}`;
      status.classList.add(response.ok ? "saved" : "error");
    } catch (err) {
      status.textContent = `Not saved: the site could not be reached (${err.message}).`;
      status.classList.add("error");
    } finally {
      button.disabled = false;
    }
  });
});
