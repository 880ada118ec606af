// The server redirects back to the sign-in page with ?error=... when it refuses a name.
"use strict";
const error = new URLSearchParams(location.search).get("error");
if (error) {
  const box = document.getElementById("form-error");
  const messages = {
    name: "Use 1 to 24 letters, digits, spaces, '_', '.' or '-'.",
    script: "Use letters of one script (not, say, Latin mixed with Cyrillic).",
    taken: "That name is in use in another browser right now.",
  };
  box.textContent = messages[error] || "Sign-in failed, please try again.";
  box.hidden = false;
}
