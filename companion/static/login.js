// Kept out of login.html: the Content-Security-Policy allows no inline scripts.
if (location.search.includes("failed")) document.getElementById("failed").hidden = false;
