if (location.search.includes("failed=1")) {
  const p = document.createElement("p");
  p.className = "error"; p.setAttribute("role", "alert");
  p.textContent = "That key is not one of this server's keys.";
  document.querySelector("form").before(p);
}
