// Live job status: while a job runs, its page reads itself again every two seconds and
// swaps in the new #job. Without JavaScript the page is the same, refreshed by hand.
"use strict";
(function () {
  function follow() {
    var live = document.querySelector("#job[data-live]");
    if (!live) return;
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("#job");
          if (fresh) live.replaceWith(fresh);
        })
        .finally(follow);
    }, 2000);
  }
  document.addEventListener("DOMContentLoaded", follow);
})();
