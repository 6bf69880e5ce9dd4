"""The benchmark report: results.json (everything raw), report.md (tables) and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hashsearch.bench.engines import FAISS_FLAT, FAISS_MULTIHASH, MIH, OURS  # noqa: E402


def md_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats get 3 significant digits, None prints as an em dash."""

    def cell(v) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(latency: list[dict], **match) -> dict | None:
    """The one latency record matching every key=value."""
    for r in latency:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def flat_ratios(latency: list[dict]) -> list[dict]:
    """Ours vs FAISS flat: p50 of FAISS / p50 of ours per (nbits, k, mode) at the largest n (>1: ours faster)."""
    out = []
    for r in latency:
        if r["engine"] != OURS or r["op"] != "knn":
            continue
        n_max = max(x["n"] for x in latency if x["nbits"] == r["nbits"])
        f = _cell(latency, engine=FAISS_FLAT, op="knn", nbits=r["nbits"], n=r["n"], param=r["param"], mode=r["mode"])
        if r["n"] == n_max and f:
            out.append({"nbits": r["nbits"], "n": r["n"], "k": r["param"], "mode": r["mode"],
                        "threads": r.get("threads"),
                        "ours_p50_s": r["p50_s"], "faiss_p50_s": f["p50_s"], "ratio": f["p50_s"] / r["p50_s"]})
    return sorted(out, key=lambda d: (d["mode"], d["nbits"], d["k"]))


def mih_speedups(latency: list[dict], max_radius: int = 2) -> list[dict]:
    """MIH vs the linear scan (ours and FAISS flat) for lookups with r <= max_radius, every n and nbits."""
    out = []
    for m in latency:
        if m["engine"] != MIH or m["op"] != "lookup" or m["param"] > max_radius:
            continue
        key = {k: m[k] for k in ("op", "nbits", "n", "param", "mode")}
        scan, flat, multi = (_cell(latency, engine=e, **key) for e in (OURS, FAISS_FLAT, FAISS_MULTIHASH))
        hits = _cell(latency, engine=MIH, **{**key, "mode": "batch"}) or {}
        out.append({"nbits": m["nbits"], "n": m["n"], "r": m["param"], "mode": m["mode"], "mih_p50_s": m["p50_s"],
                    "speedup_vs_scan": scan["p50_s"] / m["p50_s"] if scan else None,
                    "speedup_vs_faiss_flat": flat["p50_s"] / m["p50_s"] if flat else None,
                    "speedup_vs_faiss_multihash": multi["p50_s"] / m["p50_s"] if multi else None,
                    "mean_hits": hits.get("mean_hits")})
    return sorted(out, key=lambda d: (d["mode"], d["nbits"], d["n"], d["r"]))


def _ms(s: float) -> float:
    return s * 1e3


def latency_section(latency: list[dict]) -> str:
    rows = [[r["engine"], r["nbits"], r["n"], r["op"], r["param"], r["mode"], r.get("threads"), _ms(r["p50_s"]),
             _ms(r["p99_s"]), r["qps"], r.get("mean_hits"), r["build_s"]] for r in latency]
    return md_table(["engine", "nbits", "n", "op", "k / r", "mode", "threads", "p50 ms", "p99 ms", "queries/s",
                     "hits/query", "build s"], rows)


def accuracy_tables(accuracy: dict) -> str:
    """One table per (data set, metric), laid out like the DCMH paper: methods as rows, task x nbits columns."""
    rows = accuracy.get("rows", [])
    parts = []
    for metric, label in (("map_all", "mAP@all"), ("map_k", f"mAP@{accuracy.get('map_k', 'k')}"),
                          ("p_r2", "P@r≤2")):
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            sub = [r for r in rows if r["dataset"] == ds]
            tasks = list(dict.fromkeys(r["task"] for r in sub))
            nbits = sorted({r["nbits"] for r in sub})
            methods = list(dict.fromkeys(r["method"] for r in sub))
            body = []
            for m in methods:
                vals = {(r["task"], r["nbits"]): r[metric] for r in sub if r["method"] == m}
                body.append([m] + [vals.get((t, b)) for t in tasks for b in nbits])
            parts.append(f"**{ds} — {label}**\n\n" + md_table(["method"] + [f"{t} {b}" for t in tasks for b in nbits],
                                                              body))
    return "\n\n".join(parts)


def write_report(results: dict, out_dir: Path, plots: bool = True) -> Path:
    """Write results.json, the PNG plots (unless `plots` is False) and report.md into `out_dir`; return
    the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    plots = write_plots(results, out_dir) if plots else []
    meta = results["meta"]
    latency = results.get("latency", [])
    md = [f"# hashsearch benchmark report ({meta['mode']})", "",
          md_table(["field", "value"], [[k, v] for k, v in meta.items() if k != "config"]), ""]
    if latency:
        ratios = flat_ratios(latency)
        md += ["## Ours vs FAISS flat (exact k-NN, ratio = FAISS p50 / ours p50; > 1 means ours is faster)", "",
               md_table(["mode", "threads", "nbits", "n", "k", "ours p50 ms", "FAISS p50 ms", "ratio"],
                        [[d["mode"], d["threads"], d["nbits"], d["n"], d["k"], _ms(d["ours_p50_s"]),
                          _ms(d["faiss_p50_s"]),
                          d["ratio"]] for d in ratios]), ""]
        md += ["## Multi-index hashing vs linear scan (hash lookup, r ≤ 2; speed-up = scan p50 / MIH p50)", "",
               md_table(["mode", "nbits", "n", "r", "MIH p50 ms", "vs our scan", "vs FAISS flat",
                         "vs FAISS multi-hash", "hits/query"],
                        [[d["mode"], d["nbits"], d["n"], d["r"], _ms(d["mih_p50_s"]), d["speedup_vs_scan"],
                          d["speedup_vs_faiss_flat"], d["speedup_vs_faiss_multihash"], d["mean_hits"]]
                         for d in mih_speedups(latency)]), ""]
    if results.get("storage"):
        md += ["## Bytes per item", "", md_table(
            ["item", "nbits", "n", "memory B/item", "disk B/item"],
            [[r["item"], r.get("nbits"), r.get("n"), r["memory_bytes_per_item"], r["disk_bytes_per_item"]]
             for r in results["storage"]]), ""]
    scale = results.get("scale", {})
    if scale.get("memory"):
        md += ["## Memory vs n", "", md_table(["item", "nbits", "n", "memory B/item", "disk B/item"], [
            [r["item"], r["nbits"], r["n"], r["memory_bytes_per_item"], r["disk_bytes_per_item"]]
            for r in scale["memory"]]), ""]
    if scale.get("learned"):
        md += [f"## Learned codes replicated with bit noise ({scale.get('learned_source', '')})", "",
               latency_section(scale["learned"]), ""]
    skipped = results.get("skipped", []) + scale.get("skipped", [])
    if skipped:
        md += ["## Lookups not timed (more hits per query than the run's max_hits: a bulk read, not a lookup)", "",
               md_table(["engine", "nbits", "n", "r", "mode", "hits/query"],
                        [[c["engine"], c["nbits"], c["n"], c["param"], c["mode"], c["mean_hits"]]
                         for c in skipped]), ""]
    if results.get("physical"):
        phys = results["physical"]
        md += ["## Physical limits and the fraction our scan reaches", "",
               md_table(["quantity", "value"], [[k, v] for k, v in phys["limits"].items()]), "",
               md_table(["scan", "nbits", "n", "codes/s", "GB/s", "of bandwidth", "of popcount rate"],
                        [[f["label"], f["nbits"], f["n"], f["scan_codes_per_s"], f["scan_bytes_per_s"] / 1e9,
                          f["fraction_of_bandwidth"], f["fraction_of_popcount"]] for f in phys["fractions"]]), "",
               "Bandwidth is memory read over a buffer far larger than the caches; a fraction above 1 means the "
               "database fits in cache (n · nbits/8 bytes below the last-level cache) or, batched, that each "
               "code is read once for many queries. Popcount rate: 64-bit popcounts per second per thread on a "
               "cache-resident buffer.", ""]
    if results.get("accuracy", {}).get("rows"):
        acc = results["accuracy"]
        md += ["## Accuracy", "", *acc.get("notes", []), "", accuracy_tables(acc), ""]
    if results.get("accuracy", {}).get("recall"):
        rec = results["accuracy"]["recall"]
        keys = [k for k in rec[0] if k.startswith("recall@")]
        md += [f"**Unlabelled descriptors: share of the true {rec[0]['true_k']} Euclidean neighbours in the Hamming "
               "top K**", "", md_table(["data set", "method", "nbits"] + keys,
                                       [[r["dataset"], r["method"], r["nbits"]] + [r[k] for k in keys] for r in rec]), ""]
    if latency:
        md += ["## All latency cells", "", latency_section(latency), ""]
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    md += ["", "## Section times (s)", "", md_table(["section", "seconds"], list(results.get("timings", {}).items()))]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Latency vs n, speed-ups, memory vs n, PR and top-K curves (those the results have data for)."""
    paths = []
    latency = results.get("latency", [])
    if latency:
        nbits = results["meta"].get("scale_nbits", 64)
        paths.append(_save(latency_figure(latency, nbits), out_dir / "latency_vs_n.png"))
        paths.append(_save(speedups_figure(latency), out_dir / "speedups.png"))
    mem = results.get("scale", {}).get("memory")
    if mem:
        paths.append(_save(memory_figure(mem), out_dir / "memory_vs_n.png"))
    learned = results.get("scale", {}).get("learned")
    if learned:
        paths.append(_plot_learned_scale(learned, results["scale"].get("learned_source", ""), out_dir))
    for curve in results.get("accuracy", {}).get("curves", []):
        paths.append(_plot_curves(curve, out_dir))
    return [p for p in paths if p is not None]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _n_label(n: int) -> str:
    """10^k as mathtext, other sizes with thousands separators."""
    k = round(np.log10(n)) if n > 0 else 0
    return f"$10^{{{k}}}$" if 10**k == n else f"{n:,}"


def latency_figure(latency: list[dict], nbits: int):
    """p50 latency against database size n, one line per engine, for k-NN and lookup, single and batched."""
    widths = sorted({r["nbits"] for r in latency})
    nbits = nbits if nbits in widths else widths[-1]
    panels = [(op, mode) for op in ("knn", "lookup") for mode in ("single", "batch")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (op, mode) in zip(axes.ravel(), panels):
        params = sorted({r["param"] for r in latency if r["op"] == op})
        if not params:
            continue
        param = params[len(params) // 2]
        for eng in dict.fromkeys(r["engine"] for r in latency):
            pts = sorted((r["n"], r["p50_s"] * 1e3) for r in latency if r["engine"] == eng and r["op"] == op
                         and r["mode"] == mode and r["nbits"] == nbits and r["param"] == param)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=eng)
        ax.set(xscale="log", yscale="log", xlabel="database size n", ylabel="p50 latency (ms)",
               title=f"{op} {'k' if op == 'knn' else 'r'}={param}, {mode}, {nbits} bits")
        ax.legend(fontsize=8)
    return fig


def speedups_figure(latency: list[dict]):
    """Ours vs FAISS flat for exact k-NN (grouped bars: code width x k, one panel per query mode, at
    the largest n of each width) and MIH vs the linear scan for lookups (speed-up against n)."""
    ratios = flat_ratios(latency)
    modes = sorted({d["mode"] for d in ratios}, key=lambda m: (m != "single", m))
    fig, axes = plt.subplots(1, len(modes) + 1, figsize=(5.2 * (len(modes) + 1), 4.6), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = [d for d in ratios if d["mode"] == mode]
        widths = sorted({d["nbits"] for d in sub})
        ks = sorted({d["k"] for d in sub})
        n_of = {d["nbits"]: d["n"] for d in sub}
        bar = 0.8 / len(ks)
        for j, k in enumerate(ks):
            value = {d["nbits"]: d["ratio"] for d in sub if d["k"] == k}
            ratio = np.array([value.get(b, np.nan) for b in widths])
            ax.bar([i + (j - (len(ks) - 1) / 2) * bar for i in range(len(widths))], ratio - 1, bar, bottom=1,
                   label=f"k={k}")  # bars grow from 1 (a tie), up where ours is faster, down where slower
        ax.set_xticks(range(len(widths)), [f"{b} bits\nn={_n_label(n_of[b])}" for b in widths])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(yscale="log", ylabel="FAISS flat p50 / ours p50 (> 1: ours faster)", title=f"exact k-NN, {mode} queries")
        ax.legend(fontsize=8, ncol=2)
    b = axes[0][-1]
    speed = [d for d in mih_speedups(latency) if d["speedup_vs_scan"] and d["mode"] == "single"]
    widths = sorted({d["nbits"] for d in speed})
    for (nbits, r) in sorted({(d["nbits"], d["r"]) for d in speed}):
        pts = sorted((d["n"], d["speedup_vs_scan"]) for d in speed if d["nbits"] == nbits and d["r"] == r)
        b.plot(*zip(*pts), ("-", "--", ":", "-.")[r % 4], marker="o", color=f"C{widths.index(nbits)}",
               label=f"{nbits} bits, r={r}")
    b.axhline(1.0, color="k", lw=0.8)
    b.set(xscale="log", yscale="log", xlabel="database size n", ylabel="our scan p50 / MIH p50",
          title="MIH vs linear scan, single-query lookup")
    if speed:
        b.legend(fontsize=7, ncol=2)
    return fig


def memory_figure(mem: list[dict]):
    """Index memory per item against n, one line per engine, with the packed code size for reference."""
    nbits = mem[0]["nbits"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, item in enumerate(dict.fromkeys(r["item"] for r in mem)):  # distinct markers: lines may coincide
        pts = sorted((r["n"], r["memory_bytes_per_item"]) for r in mem if r["item"] == item)
        ax.plot(*zip(*pts), marker="osD^v"[i % 5], markersize=9 - 1.5 * (i % 5), label=item)
    ax.axhline(nbits / 8, color="k", lw=0.8, ls="--", label=f"packed code ({nbits // 8} B)")
    measure = mem[0].get("memory_measure", "resident memory growth")
    ax.set(xscale="log", yscale="log", xlabel="database size n", ylabel="bytes per item",
           title=f"index memory vs n ({nbits} bits): {measure}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    return fig


def _plot_learned_scale(learned: list[dict], source: str, out_dir: Path) -> Path:
    """Learned codes replicated with noise: single-query latency vs n per engine, and the ratio to our scan."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sizes = {r["n"] for r in learned}
    timed_at = {}  # radius -> the n at which it was timed
    for r in learned:
        if r["op"] == "lookup":
            timed_at.setdefault(r["param"], set()).add(r["n"])
    radius = max((x for x, ns in timed_at.items() if ns == sizes), default=min(timed_at, default=0))
    ops = [("lookup", radius), ("knn", 10)]  # the widest radius timed at every n (bulk reads are skipped)
    for (op, param), ls in zip(ops, ("-", "--")):
        cells = [r for r in learned if r["op"] == op and r["param"] == param and r["mode"] == "single"]
        scan = {r["n"]: r["p50_s"] for r in cells if r["engine"] == OURS}
        for eng in dict.fromkeys(r["engine"] for r in cells):
            pts = sorted((r["n"], r["p50_s"]) for r in cells if r["engine"] == eng)
            label = f"{eng} {op} {'r' if op == 'lookup' else 'k'}={param}"
            axes[0].plot([n for n, _ in pts], [t * 1e3 for _, t in pts], ls, marker="o", label=label)
            ratio = [(n, scan[n] / t) for n, t in pts if n in scan]
            if ratio:
                axes[1].plot(*zip(*ratio), ls, marker="o", label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="database size n", ylabel="p50 latency (ms), one query",
                title="learned codes at scale")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(xscale="log", yscale="log", xlabel="database size n", ylabel="our linear scan p50 / engine p50",
                title="speed-up over a linear scan")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(source, fontsize=9)
    return _save(fig, out_dir / "learned_scale.png")


def _plot_curves(curve: dict, out_dir: Path) -> Path:
    """PR-by-radius and top-K precision of every method on one (data set, task, nbits)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, c in curve["methods"].items():
        a.plot(c["recall"], c["precision"], marker=".", label=method)
        b.plot(c["topk"], c["topk_precision"], marker=".", label=method)
    a.set(xlabel="recall", ylabel="precision", title=f"{curve['dataset']} {curve['task']} {curve['nbits']} bits: "
          "PR by Hamming radius")
    b.set(xscale="log", xlabel="top K", ylabel="precision@K", title="top-K precision")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    safe = f"{curve['dataset']}_{curve['task']}_{curve['nbits']}".replace("→", "to").replace(" ", "")
    return _save(fig, out_dir / f"curves_{safe}.png")
