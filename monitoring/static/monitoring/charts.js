/* Inkwave Ops charts: time series on uPlot (vendor/uplot, served from our own static files).
 *
 * One function, InkwaveCharts.timeSeries(element, spec), used by the dashboard, the rule
 * preview, the incident page and the venue page, so every picture reads the same way:
 *
 *   spec = {
 *     title: "Error rate",              // drawn above the plot, also the chart's aria-label
 *     unit: "%",                         // appended to axis values and the legend
 *     times: [unix seconds...],          // the x values
 *     series: [{label, values, dash}],   // one line each; null values leave gaps
 *     thresholds: [{label, value, kind}],// horizontal lines; kind "fire" solid, "clear" dashed
 *     spans: [{start, end, label}],      // shaded time ranges (incidents); end null = still open
 *     marks: [{at, label}],              // vertical marks (timeline events)
 *     height: 220,
 *     minSpan: 120,                      // optional: at least this many seconds in view
 *   }
 *
 * It returns the uPlot chart; a live picture replaces its data with
 * chart.setData([times, values...]) and the y axis follows (thresholds stay in view).
 *
 * Colours: the Okabe-Ito palette, which stays distinguishable with the common colour vision
 * deficiencies; lines also differ by dash and thresholds are labelled, so nothing relies on
 * red against green. The chart follows its container's width (phones included).
 */
(function () {
  "use strict";

  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"];
  var SPAN_FILL = "rgba(213, 94, 0, 0.13)";
  var SPAN_EDGE = "rgba(213, 94, 0, 0.55)";
  var MARK = "#555";
  var MIN_SPAN = 4;

  function formatter(unit) {
    return function (value) {
      if (value == null || isNaN(value)) return "\u2013";
      var abs = Math.abs(value);
      var text = abs >= 1000 ? Math.round(value).toLocaleString() :
        abs >= 10 ? value.toFixed(0) : abs >= 1 ? value.toFixed(1) : value.toFixed(2);
      return unit ? text + " " + unit : text;
    };
  }

  // Draws the spans under the lines, and the thresholds and marks over them.
  function overlays(spec) {
    function x(u, t) { return u.valToPos(t, "x", true); }
    function label(ctx, text, px, py, align) {
      ctx.font = 11 * devicePixelRatio + "px system-ui, sans-serif";
      ctx.textAlign = align || "left";
      ctx.fillStyle = "#333";
      ctx.fillText(text, px, py);
    }
    return {
      hooks: {
        drawClear: [function (u) {
          var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
          var left = u.bbox.left, right = u.bbox.left + u.bbox.width;
          (spec.spans || []).forEach(function (span) {
            var a = Math.max(left, x(u, span.start));
            var b = Math.min(right, x(u, span.end == null ? u.scales.x.max : span.end));
            if (!(b >= a)) return;
            // A span of a few minutes in a week is under a pixel wide: drawn at least
            // MIN_SPAN pixels wide, so that every span is seen.
            var least = MIN_SPAN * devicePixelRatio;
            if (b - a < least) {
              a = Math.max(left, Math.min(a, right - least));
              b = a + least;
            }
            ctx.fillStyle = SPAN_FILL;
            ctx.fillRect(a, top, b - a, height);
            ctx.fillStyle = SPAN_EDGE;
            ctx.fillRect(a, top, Math.max(1, devicePixelRatio), height);
          });
        }],
        draw: [function (u) {
          var ctx = u.ctx, left = u.bbox.left, right = u.bbox.left + u.bbox.width;
          ctx.save();
          (spec.thresholds || []).forEach(function (line) {
            var y = u.valToPos(line.value, "y", true);
            if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) return;
            ctx.strokeStyle = line.kind === "clear" ? "#009E73" : "#D55E00";
            ctx.lineWidth = 1.5 * devicePixelRatio;
            ctx.setLineDash(line.kind === "clear" ? [6 * devicePixelRatio, 4 * devicePixelRatio] : []);
            ctx.beginPath();
            ctx.moveTo(left, y);
            ctx.lineTo(right, y);
            ctx.stroke();
            // A clear threshold's label goes under its line: it usually sits just below the
            // firing one, whose label goes above. Labels sit at the left end: the right end
            // is where an open incident's marks and their labels are.
            var dy = line.kind === "clear" ? 13 : -4;
            label(ctx, line.label, left + 4 * devicePixelRatio, y + dy * devicePixelRatio, "left");
          });
          ctx.setLineDash([2 * devicePixelRatio, 3 * devicePixelRatio]);
          (spec.marks || []).forEach(function (mark, index) {
            var px = x(u, mark.at);
            if (px < left || px > right) return;
            ctx.strokeStyle = MARK;
            ctx.lineWidth = devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(px, u.bbox.top);
            ctx.lineTo(px, u.bbox.top + u.bbox.height);
            ctx.stroke();
            // Staggered so that neighbouring marks' labels do not sit on each other.
            var py = u.bbox.top + (12 + 13 * (index % 3)) * devicePixelRatio;
            // Near the right edge (an open incident's latest events) the label goes to
            // the left of its mark, inside the plot.
            ctx.font = 11 * devicePixelRatio + "px system-ui, sans-serif";
            var fits = px + 3 * devicePixelRatio + ctx.measureText(mark.label).width <= right;
            label(ctx, mark.label, px + (fits ? 3 : -3) * devicePixelRatio, py, fits ? "left" : "right");
          });
          ctx.restore();
        }],
      },
    };
  }

  function timeSeries(element, spec) {
    var format = formatter(spec.unit || "");
    var series = [{}];
    var data = [spec.times];
    (spec.series || []).forEach(function (line, index) {
      series.push({
        label: line.label,
        stroke: line.color || PALETTE[index % PALETTE.length],
        width: 2,
        dash: line.dash || (index % 2 ? [8, 4] : undefined),
        spanGaps: false,
        value: function (u, v) { return format(v); },
        // Points on short series; on long ones only where a value stands alone between
        // gaps (a lone reading), which a line cannot draw.
        points: { show: true, filter: function (u, seriesIdx) {
          var values = u.data[seriesIdx], alone = [];
          if (values.length < 60) return null;
          for (var i = 0; i < values.length; i++) {
            if (values[i] != null && values[i - 1] == null && values[i + 1] == null) alone.push(i);
          }
          return alone;
        } },
      });
      data.push(line.values);
    });
    // The y range holds every value and threshold, from 0; computed from the chart's data,
    // so a chart given new data with chart.setData (a live one) rescales to it.
    function yRange(u) {
      var lo = 0, hi = null;
      u.data.slice(1).forEach(function (values) {
        (values || []).forEach(function (v) {
          if (v == null) return;
          if (v < lo) lo = v;
          if (hi == null || v > hi) hi = v;
        });
      });
      (spec.thresholds || []).forEach(function (line) {
        if (line.value < lo) lo = line.value;
        if (hi == null || line.value > hi) hi = line.value;
      });
      if (hi == null) hi = 1;
      return [lo, hi > lo ? hi * 1.1 : lo + 1];
    }

    // The time axis covers the marks and spans too: an event after the last value (an
    // open incident's latest events) is drawn, not cut off. A function of the data's own
    // extent, so a live chart given new data with setData still moves on.
    var xMin = Infinity, xMax = -Infinity;
    function widen(t) { if (t != null) { xMin = Math.min(xMin, t); xMax = Math.max(xMax, t); } }
    (spec.marks || []).forEach(function (mark) { widen(mark.at); });
    (spec.spans || []).forEach(function (span) { widen(span.start); widen(span.end); });
    var xScale = {
      time: true,
      range: function (u, min, max) {
        var lo = min == null ? xMin : Math.min(min, xMin);
        var hi = max == null ? xMax : Math.max(max, xMax);
        if (!isFinite(lo) || !isFinite(hi)) { var now = Date.now() / 1000; return [now - 60, now]; }
        // A live chart's first seconds span a moment: without a floor its axis reads in
        // milliseconds (":59.200"); spec.minSpan keeps at least that many seconds in view.
        if (spec.minSpan && hi - lo < spec.minSpan) lo = hi - spec.minSpan;
        return [lo, hi > lo ? hi : lo + 60];
      },
    };

    element.setAttribute("role", "img");
    element.setAttribute("aria-label", spec.title || "chart");
    var opts = {
      title: spec.title,
      width: Math.max(280, element.clientWidth || 600),
      height: spec.height || 220,
      series: series,
      scales: { x: xScale, y: { range: yRange } },
      // The time axis keeps its labels ("12:00am") apart: uPlot's default spacing lets
      // ten-minute ticks of a three-hour chart run into each other.
      axes: [{ space: 90 }, {
        // One number of decimals for every tick, as many as the step between them needs
        // (0.25 is not "0.3"). uPlot calls values(u, splits, axisIdx, foundSpace, foundIncr).
        values: function (u, ticks, axisIdx, space, incr) {
          var decimals = 0;
          while (decimals < 3 && Math.abs(Math.round(incr * Math.pow(10, decimals)) -
            incr * Math.pow(10, decimals)) > 1e-6) decimals++;
          return ticks.map(function (v) {
            var text = Math.abs(v) >= 1000 && decimals === 0 ? Math.round(v).toLocaleString() : v.toFixed(decimals);
            return text + (spec.unit ? " " + spec.unit : "");
          });
        },
        // As wide as its longest label, so that "1,200 EUR/h" is not cut at the left edge.
        size: function (u, values) {
          var longest = 0;
          (values || []).forEach(function (v) { longest = Math.max(longest, String(v).length); });
          return Math.max(40, Math.ceil(longest * 7 + 20));
        },
      }],
      legend: { live: true },
      plugins: [overlays(spec)],
    };
    var chart = new uPlot(opts, data, element);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        var width = Math.max(280, element.clientWidth);
        if (width !== chart.width) chart.setSize({ width: width, height: opts.height });
      }).observe(element);
    }
    return chart;
  }

  // Reads a spec from a <script type="application/json" id="..."> and draws it into element.
  function fromJson(element, scriptId) {
    var source = document.getElementById(scriptId);
    if (!source) return null;
    return timeSeries(element, JSON.parse(source.textContent));
  }

  window.InkwaveCharts = { timeSeries: timeSeries, fromJson: fromJson, palette: PALETTE, format: formatter };
})();
