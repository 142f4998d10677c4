// Sample buttons fill the textarea instead of submitting (without JS they submit their sample directly).
document.addEventListener("DOMContentLoaded", () => {
  const textarea = document.getElementById("text");
  if (!textarea) return;
  for (const button of document.querySelectorAll("button.sample")) {
    button.addEventListener("click", (event) => {
      event.preventDefault();
      textarea.value = button.dataset.text;
      textarea.focus();
      textarea.scrollIntoView({ block: "center", behavior: "smooth" });
    });
  }
});
