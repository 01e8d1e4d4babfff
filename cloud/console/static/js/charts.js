// charts with uPlot (vendored under static/vendor/uplot): a time series from the API's
// {time, value} points, sized to its box
"use strict";
const linliCharts = (() => {
  const COLOURS = ["#0b5cad", "#b35400", "#1d7a3a", "#7a3ea1"];

  function columns(series) {
    // several {name: [{time, value}]} series on one time axis
    const times = new Set();
    for (const points of Object.values(series)) for (const p of points) times.add(Date.parse(p.time) / 1000);
    const xs = [...times].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const ys = Object.values(series).map((points) => {
      const column = new Array(xs.length).fill(null);
      for (const p of points) column[index.get(Date.parse(p.time) / 1000)] = p.value;
      return column;
    });
    return [xs, ...ys];
  }

  // draw `series` into `box`; `onZoom(startMs, endMs)` is called when the user drags across it
  function draw(box, series, {height = 240, labels = {}, onZoom, steps = false} = {}) {
    box.replaceChildren();
    const names = Object.keys(series);
    const data = columns(series);
    const opts = {
      width: Math.max(280, box.clientWidth || 600),
      height,
      scales: {x: {time: true}},
      series: [{}, ...names.map((name, i) => ({
        label: labels[name] || name, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false,
        points: {show: data[0].length < 80},
        paths: steps ? uPlot.paths.stepped({align: 1}) : undefined,
      }))],
      axes: [{}, ...names.slice(0, 2).map((_, i) => ({scale: names[i], side: i === 0 ? 3 : 1}))],
      cursor: {drag: {x: true, y: false, setScale: false}},
      hooks: {setSelect: [(u) => {
        if (!onZoom || u.select.width < 5) return;
        const from = u.posToVal(u.select.left, "x");
        const to = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({left: 0, width: 0}, false);
        onZoom(from * 1000, to * 1000);
      }]},
    };
    for (const [i, name] of names.entries()) opts.series[i + 1].scale = name;
    const chart = new uPlot(opts, data, box);
    new ResizeObserver(() => chart.setSize({width: Math.max(280, box.clientWidth), height})).observe(box);
    return chart;
  }

  return {draw};
})();
