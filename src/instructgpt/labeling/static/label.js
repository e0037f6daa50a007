// The ranking board (HTML5 drag and drop, with a keyboard alternative) and a double-submit
// guard. Each card holds a <select name="rank_i"> that is the real form field: dragging or a
// key press sets it, and changing it moves the card, so the form also works without a mouse.
(function () {
  "use strict";
  const board = document.getElementById("board");
  if (board) {
    const k = Number(board.dataset.k);
    const columns = Array.from(board.querySelectorAll(".column"));
    const place = (card, column) => {
      column = Math.max(0, Math.min(k, column));
      columns[column].querySelector(".cards").appendChild(card);
      card.querySelector("select").value = String(column);
    };
    board.querySelectorAll(".card").forEach((card) => {
      const select = card.querySelector("select");
      place(card, Number(select.value));
      select.addEventListener("change", () => { place(card, Number(select.value)); select.focus(); });
      card.addEventListener("dragstart", (event) => {
        event.dataTransfer.setData("text/plain", card.id);
        event.dataTransfer.effectAllowed = "move";
        card.classList.add("dragging");
      });
      card.addEventListener("dragend", () => card.classList.remove("dragging"));
      card.addEventListener("keydown", (event) => {
        if (event.target !== card) return; // keys inside the menu belong to the menu
        const current = Number(select.value);
        let target = null;
        if (/^[0-9]$/.test(event.key)) target = Number(event.key);
        else if (event.key === "ArrowRight") target = current + 1;
        else if (event.key === "ArrowLeft") target = current - 1;
        if (target === null || target > k) return;
        event.preventDefault();
        place(card, target);
        card.focus();
      });
    });
    columns.forEach((column, index) => {
      column.addEventListener("dragover", (event) => { event.preventDefault(); column.classList.add("over"); });
      column.addEventListener("dragleave", () => column.classList.remove("over"));
      column.addEventListener("drop", (event) => {
        event.preventDefault();
        column.classList.remove("over");
        const card = document.getElementById(event.dataTransfer.getData("text/plain"));
        if (card && board.contains(card)) place(card, index);
      });
    });
  }
  // A second click while the first submission is on its way does nothing (the server also
  // stores a repeated submission once, by its idempotency key).
  document.querySelectorAll("form[data-once]").forEach((form) => {
    form.addEventListener("submit", () => {
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    });
  });
})();
