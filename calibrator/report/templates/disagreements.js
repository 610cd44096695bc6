(function () {
  var table = document.getElementById("disagreements-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  function sortBy(key, numeric, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      var d = numeric ? parseFloat(x) - parseFloat(y) : (x < y ? -1 : x > y ? 1 : 0);
      return descending ? -d : d;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.getElementById("sort-error").addEventListener("click", function () { sortBy("error", true, true); });
  document.getElementById("sort-id").addEventListener("click", function () { sortBy("id", false, false); });
  document.getElementById("gold-filter").addEventListener("change", function (event) {
    var wanted = event.target.value;
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = wanted !== "" && row.dataset.gold !== wanted;
    });
  });
})();
