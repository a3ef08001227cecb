"""Gallery search at scale: synthetic 512-d unit templates, per index kind of fusion/search.py.

For 1,000,000 templates (--rows) this measures, with FAISS on one core
(faiss.omp_set_num_threads(1)), for each index kind:
  * exact  - IndexFlatIP over float32 rows;
  * ivfpq  - IndexIVFPQ (64-byte codes), the shortlist rescored exactly against the
             templates, at several nprobe;
  * hnsw   - IndexHNSWFlat. Building it at 1M takes over an hour on one core of this
             shared machine (about 200 s per 50k rows measured), so it is built on
             --hnsw-rows rows and its 1M figures are extrapolated (said so in the table);
build time, memory (resident-set growth while building, and the index's own bytes),
per-probe top-10 latency p50/p99 (one probe at a time), batched probes/s, and recall@10
against the exact search, plus "mate@1": the probe's own template ranked first. The
float16 torch/numpy matrix product identify used before (174 ms) is re-measured as "today".

Probes are noisy copies (sigma 0.02 per dimension) of known templates. The gallery rows are
isotropic random unit vectors: neighbours 2..10 of a probe are then barely above the crowd
(cosine ~0.15 vs ~0), the worst case for any approximate index (no locality to exploit);
real embedding galleries have structure, so these recalls are lower bounds.

    nice -n 10 .venv/bin/python benchmarks/gallery_search_scale.py [--rows 1000000]
Writes benchmarks/results/gallery_search_scale.{json,md}. Nothing is written under the
repository but the results; the gallery lives in memory only.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch/faiss start their pools
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from biofuse.fusion import search  # noqa: E402
from biofuse.fusion.scores import similarity  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM, TOP_K, SHORTLIST = 512, 10, 100


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gallery(rows: int, seed: int = 0) -> np.ndarray:
    x = np.empty((rows, DIM), np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 65536):
        block = rng.standard_normal((min(65536, rows - start), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + len(block)] = block
    return x


def probes_for(x: np.ndarray, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(x), size=n, replace=False)
    q = x[truth] + 0.02 * rng.standard_normal((n, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q), truth


def per_probe(fn, probes: np.ndarray) -> tuple[list[float], np.ndarray]:  # type: ignore[no-untyped-def]
    fn(probes[:1])  # warm-up
    times, found = [], []
    for i in range(len(probes)):
        start = time.perf_counter()
        found.append(fn(probes[i : i + 1])[0])
        times.append(time.perf_counter() - start)
    return times, np.stack(found)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a[:TOP_K]) & set(b[:TOP_K])) / TOP_K for a, b in zip(found, exact)])
    )


def entry(kind, rows, build_s, memory, times, batch_s, batch, found, exact, truth, **extra):  # type: ignore[no-untyped-def]
    return {
        "kind": kind,
        "rows": rows,
        "build_s": round(build_s, 1),
        "memory_bytes": int(memory),
        "p50_ms": round(1000 * float(np.median(times)), 3),
        "p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
        "n_single": len(times),
        "batch": batch,
        "batched_probes_per_s": round(batch / batch_s, 1),
        "recall_at_10": round(recall(found, exact), 4),
        "mate_at_1": round(float(np.mean(found[:, 0] == truth[: len(found)])), 4),
        **extra,
    }


def rescored(index, x: np.ndarray, shortlist: int):  # type: ignore[no-untyped-def]
    """Search the index for `shortlist` rows, rescore exactly, keep the top 10."""

    def fn(q: np.ndarray) -> np.ndarray:
        _, cand = index.search(q, shortlist)
        out = np.empty((len(q), TOP_K), np.int64)
        for p, row in enumerate(cand):
            row = row[row >= 0]
            out[p] = row[np.argsort(-(x[row] @ q[p]))[:TOP_K]]
        return out

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=100, help="single-probe timings")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hnsw-rows", type=int, default=20_000)
    parser.add_argument("--nprobes", default="16,64,256")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    base_rss = rss_bytes()
    x = gallery(args.rows)
    q, truth = probes_for(x, max(args.probes, args.batch))
    results = []

    # today: identify's brute force, biofuse.fusion.scores.similarity over every template (it
    # renormalises the templates on each call), then the top 10
    def today(p: np.ndarray) -> np.ndarray:
        s = similarity(p, x, "cosine")[0]
        top = np.argpartition(-s, TOP_K)[:TOP_K]
        return top[np.argsort(-s[top])][None]

    t16, f16 = per_probe(today, q[:5])

    # exact: IndexFlatIP
    before = rss_bytes()
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    build = time.perf_counter() - t0
    memory = rss_bytes() - before
    times, found = per_probe(lambda p: flat.search(p, TOP_K)[1], q[: args.probes])
    t0 = time.perf_counter()
    _, exact = flat.search(q[: args.batch], TOP_K)
    batch_s = time.perf_counter() - t0
    results.append(
        entry(
            "exact (IndexFlatIP, float32)",
            args.rows,
            build,
            memory,
            times,
            batch_s,
            args.batch,
            found,
            exact,
            truth,
        )
    )
    results.append(
        {
            "kind": "today (identify: numpy float32 similarity)",
            "rows": args.rows,
            "build_s": 0.0,
            "memory_bytes": args.rows * DIM * 4,
            "p50_ms": round(1000 * float(np.median(t16)), 3),
            "p99_ms": round(1000 * float(np.percentile(t16, 99)), 3),
            "n_single": len(t16),
            "batch": None,
            "batched_probes_per_s": None,
            "recall_at_10": round(recall(f16, exact), 4),
            "mate_at_1": round(float(np.mean(f16[:, 0] == truth[:5])), 4),
        }
    )
    flat.reset()  # frees its copy of the rows
    print(json.dumps(results[-2:], indent=1), flush=True)

    # ivfpq: the kind of fusion/search.py, exact rescoring of a shortlist of 100
    before = rss_bytes()
    t0 = time.perf_counter()
    ivf = search.build_index(x, "ivfpq")
    build = time.perf_counter() - t0
    memory = rss_bytes() - before
    own = ivf.invlists.compute_ntotal() * (ivf.code_size + 8) + ivf.nlist * DIM * 4
    for nprobe in [int(n) for n in args.nprobes.split(",")]:
        ivf.nprobe = nprobe
        fn = rescored(ivf, x, SHORTLIST)
        times, found = per_probe(fn, q[: args.probes])
        t0 = time.perf_counter()
        fn(q[: args.batch])
        batch_s = time.perf_counter() - t0
        results.append(
            entry(
                f"ivfpq nlist={ivf.nlist} nprobe={nprobe}, PQ{ivf.pq.M}x8, "
                f"rescored top-{SHORTLIST}",
                args.rows,
                build,
                memory,
                times,
                batch_s,
                args.batch,
                found,
                exact,
                truth,
                index_bytes=int(own),
                plus_templates_for_rescoring=True,
            )
        )
        print(json.dumps(results[-1], indent=1), flush=True)
    ivf.reset()

    # hnsw: built on a subset (see the docstring), extrapolated to --rows
    sub = x[: args.hnsw_rows]
    sub_q, sub_truth = probes_for(sub, args.probes, seed=2)
    sub_flat = faiss.IndexFlatIP(DIM)
    sub_flat.add(sub)
    _, sub_exact = sub_flat.search(sub_q, TOP_K)
    before = rss_bytes()
    t0 = time.perf_counter()
    hnsw = search.build_index(sub, "hnsw")
    build = time.perf_counter() - t0
    memory = rss_bytes() - before
    for ef in (128, 512):
        hnsw.hnsw.efSearch = ef
        times, found = per_probe(lambda p: hnsw.search(p, TOP_K)[1], sub_q)
        t0 = time.perf_counter()
        hnsw.search(sub_q, TOP_K)
        batch_s = time.perf_counter() - t0
        measured = entry(
            f"hnsw M={search.HNSW_M} efC={search.HNSW_EF_CONSTRUCTION} ef={ef}",
            args.hnsw_rows,
            build,
            memory,
            times,
            batch_s,
            len(sub_q),
            found,
            sub_exact,
            sub_truth,
            measured=True,
        )
        results.append(measured)
        scale = args.rows / args.hnsw_rows
        log_scale = math.log(args.rows) / math.log(args.hnsw_rows)
        results.append(
            {
                **measured,
                "rows": args.rows,
                "measured": False,
                "build_s": round(build * scale * log_scale, 1),
                "memory_bytes": int(args.rows * (DIM * 4 + search.HNSW_M * 2 * 4 * 1.1)),
                "p50_ms": round(measured["p50_ms"] * log_scale, 3),
                "p99_ms": round(measured["p99_ms"] * log_scale, 3),
                "batched_probes_per_s": round(measured["batched_probes_per_s"] / log_scale, 1),
                "recall_at_10": None,
                "mate_at_1": None,
                "extrapolated_from": args.hnsw_rows,
            }
        )
        print(json.dumps(results[-2:], indent=1), flush=True)

    result = {
        "rows": args.rows,
        "dim": DIM,
        "threads": 1,
        "faiss": faiss.__version__,
        "results": results,
        "total_s": round(time.perf_counter() - started, 1),
        "peak_rss_growth_bytes": rss_bytes() - base_rss,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "command": "nice -n 10 .venv/bin/python benchmarks/gallery_search_scale.py",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gallery_search_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "gallery_search_scale.md").write_text(render(result))
    print(render(result))


def _fmt(v: object) -> str:
    return "n/a" if v is None else str(v)


def render(r: dict) -> str:
    lines = [
        f"# Gallery search: {r['rows']:,} x {r['dim']} unit templates, FAISS {r['faiss']}, "
        "one core",
        "",
        f"Command: `{r['command']}` ({r['total_s']} s). Machine: {r['machine']['cores']} cores, "
        f"load average {r['machine']['load_average_at_end']} at the end (shared: timings are "
        "upper bounds). Top-10 per probe; recall@10 against the exact search; mate@1: the "
        "probe's own template (a noisy copy, sigma 0.02/dim) ranked first.",
        "",
        "| index | rows | build s | memory MB | p50 ms | p99 ms | batched probes/s | "
        "recall@10 | mate@1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in r["results"]:
        note = (
            f" (extrapolated from {e['extrapolated_from']:,})" if e.get("extrapolated_from") else ""
        )
        memory = e.get("index_bytes", e["memory_bytes"])
        lines.append(
            f"| {e['kind']}{note} | {e['rows']:,} | {e['build_s']} | {memory / 1e6:.0f} | "
            f"{e['p50_ms']} | {e['p99_ms']} | {_fmt(e['batched_probes_per_s'])} | "
            f"{_fmt(e['recall_at_10'])} | {_fmt(e['mate_at_1'])} |"
        )
    lines += [
        "",
        "IVF-PQ memory is the index's own bytes (codes + ids + centroids); its exact rescoring "
        "also reads the shortlisted templates (kept on disk or in float16). HNSW's 1M row is "
        "extrapolated from the measured subset: build x n log n, latency x log n, memory = "
        "float32 rows + 2M links per row; its recall is not extrapolated.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
