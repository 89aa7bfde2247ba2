/* A small line chart on a canvas: a few series over a shared x axis, autoscaled, crisp on
   high-density screens, redrawn at most once per animation frame. No dependencies. */
"use strict";

class LineChart {
  constructor(canvas, series, band = null, marks = null) {
    this.canvas = canvas;
    this.series = series; // [{name, color, points: [[x, y], ...]}]
    // An interval drawn under the lines ({name, color, points: [[x, low, high], ...]}) and
    // points ringed on top ({name, color, points: [[x, y], ...]}); each optional.
    this.band = band;
    this.marks = marks;
    this.pending = false;
    this.resize = this.resize.bind(this);
    window.addEventListener("resize", this.resize);
    this.resize();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 600;
    const height = this.canvas.clientHeight || 280;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.ratio = ratio;
    this.draw();
  }

  clear() {
    for (const s of this.series) s.points = [];
    if (this.band) this.band.points = [];
    if (this.marks) this.marks.points = [];
    this.request();
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    window.requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  bounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      for (const [x, y] of s.points) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    if (this.band) {
      for (const [x, lo, hi] of this.band.points) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (lo < y0) y0 = lo;
        if (hi > y1) y1 = hi;
      }
    }
    if (!Number.isFinite(x0)) return null;
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.06;
    return { x0, x1, y0: y0 - pad, y1: y1 + pad };
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const r = this.ratio;
    const W = this.canvas.width / r, H = this.canvas.height / r;
    ctx.setTransform(r, 0, 0, r, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const left = W < 500 ? 46 : 64, right = 12, bottom = 26;
    const plotW = Math.max(10, W - left - right);
    const styles = getComputedStyle(document.documentElement);
    const grid = styles.getPropertyValue("--grid").trim() || "#e5e7eb";
    const ink = styles.getPropertyValue("--muted").trim() || "#6b7280";
    ctx.font = "12px system-ui, sans-serif";

    // legend, wrapping onto a second line on narrow screens
    let lx = left, ly = 10;
    const shown = [...this.series];
    if (this.band && this.band.points.length) shown.push(this.band);
    if (this.marks && this.marks.points.length) shown.push(this.marks);
    for (const s of shown) {
      const w = ctx.measureText(s.name).width + 40;
      if (lx > left && lx + w > W - right) { lx = left; ly += 16; }
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, ly, 14, 3);
      ctx.fillStyle = ink;
      ctx.fillText(s.name, lx + 18, ly + 5);
      lx += w;
    }
    const top = ly + 18;
    const plotH = Math.max(10, H - top - bottom);

    const b = this.bounds();
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.strokeRect(left + 0.5, top + 0.5, plotW, plotH);
    if (!b) {
      ctx.fillStyle = ink;
      ctx.fillText("no data yet", left + plotW / 2 - 30, top + plotH / 2);
      this.canvas.dataset.actualPoints = "0";
      this.canvas.dataset.forecastPoints = "0";
      this.canvas.dataset.bandPoints = "0";
      this.canvas.dataset.flaggedPoints = "0";
      return;
    }
    const sx = (x) => left + ((x - b.x0) / (b.x1 - b.x0)) * plotW;
    const sy = (y) => top + plotH - ((y - b.y0) / (b.y1 - b.y0)) * plotH;

    // grid and tick labels
    ctx.fillStyle = ink;
    for (let i = 0; i <= 4; i++) {
      const y = b.y0 + ((b.y1 - b.y0) * i) / 4;
      const py = Math.round(sy(y)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(left + plotW, py); ctx.stroke();
      ctx.fillText(formatTick(y), 4, py + 4);
    }
    for (let i = 0; i <= 5; i++) {
      const x = b.x0 + ((b.x1 - b.x0) * i) / 5;
      const label = String(Math.round(x));
      ctx.fillText(label, Math.min(sx(x) - ctx.measureText(label).width / 2, W - right - 30), H - 8);
    }

    // series (at most ~2 points per pixel column)
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, plotW, plotH); ctx.clip();
    const band = this.band ? this.band.points : [];
    if (band.length) {  // upper edge left to right, lower edge back: one filled shape
      const stride = Math.max(1, Math.floor(band.length / (plotW * 2)));
      const picked = band.filter((_, i) => i % stride === 0 || i === band.length - 1);
      ctx.fillStyle = this.band.color;
      ctx.beginPath();
      picked.forEach(([x, , hi], i) => (i === 0 ? ctx.moveTo(sx(x), sy(hi)) : ctx.lineTo(sx(x), sy(hi))));
      for (let i = picked.length - 1; i >= 0; i--) ctx.lineTo(sx(picked[i][0]), sy(picked[i][1]));
      ctx.closePath();
      ctx.fill();
    }
    for (const s of this.series) {
      const pts = s.points;
      if (!pts.length) continue;
      const stride = Math.max(1, Math.floor(pts.length / (plotW * 2)));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 1.6;
      ctx.beginPath();
      for (let i = 0; i < pts.length; i += stride) {
        const [x, y] = pts[i];
        if (i === 0) ctx.moveTo(sx(x), sy(y)); else ctx.lineTo(sx(x), sy(y));
      }
      const [lxp, lyp] = pts[pts.length - 1];
      ctx.lineTo(sx(lxp), sy(lyp));
      ctx.stroke();
    }
    if (this.marks) {
      ctx.strokeStyle = this.marks.color;
      ctx.lineWidth = 1.8;
      for (const [x, y] of this.marks.points) {
        ctx.beginPath(); ctx.arc(sx(x), sy(y), 4.5, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    ctx.restore();
    this.canvas.dataset.bandPoints = String(band.length);
    this.canvas.dataset.flaggedPoints = String(this.marks ? this.marks.points.length : 0);
    this.canvas.dataset.actualPoints = String(this.series[0].points.length);
    this.canvas.dataset.forecastPoints = String(this.series[1] ? this.series[1].points.length : 0);
  }
}

function formatTick(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  return v.toPrecision(3);
}

window.LineChart = LineChart;
