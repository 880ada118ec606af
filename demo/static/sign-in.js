// The server redirects back to the sign-in page with ?error=... when it refuses a name.
"use strict";
const error = new URLSearchParams(location.search).get("error");
if (error) {
  const box = document.getElementById("form-error");
  box.textContent = error === "name"
    ? "Use 1 to 24 letters, digits, spaces, '_', '.' or '-'."
    : "Sign-in failed, please try again.";
  box.hidden = false;
}
