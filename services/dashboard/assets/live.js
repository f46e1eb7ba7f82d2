// Keeps the page's live sections current: the server pushes each section's HTML as a
// server-sent event named after the section's id whenever what it shows changes.
(function () {
  var main = document.querySelector('main[data-live]');
  if (!main || !window.EventSource) return;
  var es = new EventSource('/' + main.getAttribute('data-live'));
  ['fleet', 'jobs', 'throughput'].forEach(function (id) {
    es.addEventListener(id, function (e) {
      var el = document.getElementById(id);
      if (el) el.innerHTML = e.data;
    });
  });
})();
