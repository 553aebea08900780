// Sign-in pages: a link to a conversation (/#<uuid>) leads back to it after signing in.
// The server never sees the part after "#", so the page adds it to the form's `next`.
const next = document.querySelector('form input[name="next"]');
if (next && location.hash && !next.value.includes("#")) next.value += location.hash;
