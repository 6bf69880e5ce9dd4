"""The `hashsearch` command (installed as hashsearch.cli)."""
from __future__ import annotations

import functools
import os
import sys

import click

from hashsearch.backends import backend_names, build_params
from hashsearch.errors import HashsearchError


def one_line_errors(fn):
    """Turn expected failures into one clear line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (HashsearchError, ValueError, OSError, KeyError, EOFError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except MemoryError as exc:
            click.echo(f"error: out of memory{f' ({exc})' if str(exc) else ''}", err=True)
            sys.exit(1)

    return wrapper


class OneLineUsageErrors(click.Group):
    """Click's usage errors (a bad option value, a missing argument) as one line too, with where to
    read the command's help, instead of a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


THREADS_HELP = ("Torch threads while training. One is fastest for the feature MLPs on a small machine; "
                "more help convolutional networks on many cores.")


def backend_params_help() -> str:
    """What --param takes, per backend (from the backend registry, so it cannot fall out of date)."""
    per = [f"{b}: {', '.join(f'{k}={t.__name__.upper()}' for k, t in build_params(b).items()) or 'none'}"
           for b in backend_names()]
    return "Backend parameter KEY=VALUE, repeatable (" + "; ".join(per) + ")."


@click.group("hashsearch", cls=OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashsearch")
def main() -> None:
    """Learned binary codes and exact Hamming search.

    Errors are one line on stderr and a non-zero exit status.
    """


# --- index commands (STORAGE): logic in hashsearch/codefiles.py and querying.py -----------------

@main.command("build-index")
@click.argument("codes", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Index directory to write (an existing index is replaced only with --force).")
@click.option("--backend", type=click.Choice(backend_names()), default="auto", show_default=True,
              help="How each sealed segment is searched (auto: scan or MIH per query batch).")
@click.option("--ids", "ids_path", type=click.Path(dir_okay=False), help="int64 ids (.npy), one per code.")
@click.option("--nbits", type=int, help="Code width in bits (tells a uint8 0/1 bit matrix from packed bytes).")
@click.option("--column", help="Parquet column holding the codes (binary, fixed_size_binary or list).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help=backend_params_help())
@click.option("--batch-size", type=int, default=1 << 22, show_default=True, help="Codes added per step.")
@click.option("--metadata/--no-metadata", default=True, show_default=True,
              help="Keep a Parquet file's other columns as per-item metadata in the index.")
@click.option("--force", is_flag=True, help="Replace an index already at --out (never a directory of other files).")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Write a sharded index of N shards (id % N); Parquet input is read in parallel with Ray Data.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for --shards (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def build_index_command(codes, out, backend, ids_path, nbits, column, params, batch_size, metadata, force, shards,
                        ray_address) -> None:
    """Build an index from a code file.

    CODES is a .npy matrix or a Parquet file (e.g. from `hashsearch encode`; with --shards also a
    folder of Parquet files): packed bytes, bits,
    -1/+1 signs or real outputs. A Parquet file's `id` column gives the ids, and its other columns
    are kept as per-item metadata that `query` returns with each hit. An index already at --out is
    replaced only with --force.
    """
    from hashsearch import codefiles, querying

    if shards is not None:
        _build_sharded(codes, out, backend, ids_path, nbits, column, querying.parse_params(params), metadata,
                       shards, ray_address)
        return
    code_file = codefiles.read_codes(codes, nbits=nbits, column=column, with_metadata=metadata)
    if code_file.note:
        click.echo(code_file.note, err=True)
    ids = codefiles.read_ids(ids_path, code_file.codes.shape[0]) if ids_path else None
    index = querying.build_index(code_file, out, backend=backend, ids=ids,
                                 params=querying.parse_params(params), batch_size=batch_size, overwrite=force)
    click.echo(f"wrote {out}: {len(index)} codes of {index.nbits} bits, backend {backend}", err=True)


def _build_sharded(codes, out, backend, ids_path, nbits, column, params, metadata, shards, ray_address) -> None:
    from pathlib import Path

    from hashsearch import codefiles, raydata, sharded

    if Path(codes).suffix.lower() == ".npy":
        code_file = codefiles.read_codes(codes, nbits=nbits)
        ids = codefiles.read_ids(ids_path, code_file.codes.shape[0]) if ids_path else None
        counts = sharded.write_sharded(out, code_file.codes, ids, shards, backend=backend, params=params)
    else:
        if ids_path:
            raise click.UsageError("--ids applies to .npy codes; a Parquet file carries its ids in column 'id'")
        counts = raydata.build_sharded(codes, out, shards, backend=backend, params=params, column=column,
                                       nbits=nbits, with_metadata=metadata, address=ray_address)
    click.echo(f"wrote {out}: {sum(counts)} codes in {shards} shards ({', '.join(map(str, counts))}), "
               f"backend {backend}", err=True)


@main.command("query")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("queries", type=click.Path(dir_okay=False), required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Query by this image file (needs --model).")
@click.option("--text", help="Query by these words, e.g. \"sunset beach clouds\" (needs --model with a text vocabulary).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), help="Model that encodes --image or --text.")
@click.option("--show", type=click.Path(dir_okay=False),
              help="With --image or --text: write the query and its results as a PNG grid.")
@click.option("--topk", type=int, metavar="K",
              help="The K nearest codes per query (ties by ascending id); all of them if K exceeds the index.")
@click.option("--radius", type=int, metavar="R",
              help="Every code within Hamming distance R (inclusive); R >= nbits returns every code.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Result file (jsonl: default stdout; parquet: required).")
@click.option("--column", help="Parquet column holding the query codes.")
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Queries searched per step.")
@click.option("--where", help="Only items whose metadata match, e.g. \"label == 3 and year >= 2020\".")
@click.option("--explain", is_flag=True, help="Print what each segment's backend would do (JSON) instead of searching.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for a sharded index (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def query_command(index_dir, queries, image, text, model_dir, show, topk, radius, fmt, out, column, batch_size, where,
                  explain, ray_address) -> None:
    """Search an index with a file of query codes.

    Searches the index in INDEX_DIR with the codes in QUERIES (.npy or .parquet), or with one
    --image FILE or --text WORDS encoded by --model DIR (a text query needs a model that saved its
    bag-of-words vocabulary, e.g. DCMH trained on mirflickr; words outside it are ignored, with a
    note). With a model, one JSON line names each result (id, distance, stored metadata) and
    --show PNG draws the query and its results as a grid. Give exactly one
    of --topk K or --radius R. Each result line (or Parquet row) holds the query's row number
    (`query`), its id (`query_id`: the query file's `id` column, else the row number), the hits'
    `ids` and `distances`, best first, and, when the index stores metadata, each hit's `metadata`.
    --where keeps only items whose metadata match; --explain prints the search plan instead.
    A sharded index (build-index --shards) is searched on Ray (--ray-address, else a local instance).
    """
    from hashsearch import codefiles, querying
    from hashsearch.errors import InvalidInputError
    from hashsearch.index import HammingIndex

    if fmt == "parquet" and out is None:
        raise InvalidInputError("--format parquet needs --out FILE")
    given = [g for g in (queries, image, text) if g is not None]
    if len(given) != 1 or (queries is None) != (model_dir is not None) or (show and queries is not None):
        raise InvalidInputError("give QUERIES (a code file), or one of --image FILE and --text WORDS with --model DIR "
                                "(and optionally --show PNG)")
    if queries is None and (out or explain or column):
        raise InvalidInputError("--out, --format, --column and --explain apply to a QUERIES file; "
                                "--image and --text print one JSON line")
    querying.check_search_arguments(topk, radius, batch_size)  # before anything is read
    from hashsearch.sharded import ShardedIndex, is_sharded

    if is_sharded(index_dir):
        index = ShardedIndex.load(index_dir, address=ray_address)
    else:
        index = HammingIndex.load(index_dir, mmap=True)
    from hashsearch.filters import parse_where

    where = None if where is None else parse_where(where)
    if queries is None:
        _model_query(index, model_dir, image, text, topk, radius, show, where)
        return
    query_file = codefiles.read_codes(queries, nbits=index.nbits, column=column)
    if query_file.note:
        click.echo(query_file.note, err=True)
    if explain:
        import json

        plan = index.explain(query_file.codes.shape[0], k=topk, radius=radius)
        click.echo(json.dumps({"where": where, "segments": plan}, indent=1, default=str))
        return
    batches = querying.search_batches(index, query_file.codes, topk=topk, radius=radius, batch_size=batch_size,
                                      query_ids=query_file.ids, where=where)
    querying.write_results(batches, fmt, out, stdout=sys.stdout)


def _model_query(index, model_dir, image, text, topk, radius, show, where) -> None:
    """`query --image` / `--text`: one JSON line naming each result (id, distance, stored metadata),
    among the items `where` keeps; --show draws them."""
    import json

    from hashsearch import querying
    from hashsearch.imagequery import FILE_COLUMN, show_results

    if image is not None:
        results = querying.image_query(index, model_dir, image, topk=topk, radius=radius, where=where)
    else:
        results, unknown = querying.text_query(index, model_dir, text, topk=topk, radius=radius, where=where)
        if unknown:
            click.echo(f"note: not in the model's vocabulary, ignored: {', '.join(unknown)}", err=True)
    click.echo(json.dumps({"query": image if image is not None else text, "results": results},
                          ensure_ascii=False, default=querying.json_value))
    if show:
        if results and FILE_COLUMN not in results[0]:
            click.echo(f"note: the index has no '{FILE_COLUMN}' metadata, so --show draws each result's tags or "
                       "labels instead of its image", err=True)
        show_results(image if image is not None else text, results, show, query_is_text=image is None)
        click.echo(f"wrote {show}", err=True)


@main.command("info")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--no-verify", is_flag=True, help="Skip the SHA-256 checks (sizes and schema are still checked).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@one_line_errors
def info_command(index_dir, no_verify, as_json) -> None:
    """Describe an index on disk (single or sharded).

    Prints its bits, count, backend, bytes on disk and per item, and checks the checksums; for a
    sharded index also the shards, rows per shard, manifest version and leftovers of interrupted saves.
    """
    import json

    from hashsearch import querying

    info = querying.describe_index(index_dir, verify=not no_verify)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo("\n".join(querying.format_info(info)))


@main.command("serve")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="HASHSEARCH_API_KEY", default=None,
              help="Key that /add, /remove and /save require in the X-API-Key header (or $HASHSEARCH_API_KEY).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True, help="Codes per request.")
@click.option("--max-k", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--max-body", type=click.IntRange(min=1), default=16 << 20, show_default=True, help="Request bytes.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Copies of each shard of a sharded index (throughput).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for a sharded index (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def serve_command(index_dir, host, port, api_key, max_batch, max_k, max_body, replicas, ray_address) -> None:
    """Serve an index over HTTP.

    Serves INDEX_DIR (single or sharded) with FastAPI + uvicorn: POST /search, /range, /add,
    /remove, /save; GET /info, /healthz and the OpenAPI page /docs.
    """
    from hashsearch.server import Limits, serve

    click.echo(f"serving {index_dir} on http://{host}:{port} (API docs at /docs)", err=True)
    serve(index_dir, host=host, port=port, api_key=api_key, replicas=replicas, address=ray_address,
          limits=Limits(max_batch=max_batch, max_k=max_k, max_body_bytes=max_body))


@main.command("bench")
@click.option("--quick", "mode", flag_value="quick", default=True, help="A few minutes on 2 cores (default).")
@click.option("--full", "mode", flag_value="full", help="The whole grid: nbits 16-128, n up to 10^7, learners' recommended settings.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for report.md, results.json, PNGs.")
@click.option("--models", "models_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Read trained models from this folder instead of training them.")
@click.option("--sections", default=None, help="Comma-separated subset of physical,latency,storage,accuracy,scale.")
@click.option("--threads", type=int, default=None, help="Threads for FAISS, numba and torch (default: every core).")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Change one setting of the grid, e.g. --set sizes=1e4,1e6 --set accuracy_epochs=20 (repeatable).")
@one_line_errors
def bench_command(mode: str, out_dir: str, models_dir: str | None, sections: str | None, threads: int | None,
                  settings: tuple[str, ...]) -> None:
    """Benchmark speed, size and accuracy against FAISS.

    Writes OUT/report.md, results.json and PNG plots.
    """
    from hashsearch.bench.runner import SECTIONS, run

    chosen = tuple(s.strip() for s in sections.split(",")) if sections else SECTIONS
    report = run(mode, out_dir, models_dir=models_dir, sections=chosen, threads=threads, settings=settings)
    click.echo(f"wrote {report}")


# --- the main job (DCMH): logic in hashsearch/demo.py ----------------------------------------------

@main.command("demo")
@click.option("--data", default=None, help="Data set name or file (default: the embedded seeded synthetic paired set).")
@click.option("--nbits", type=int, default=32, show_default=True, help="Code width in bits.")
@click.option("--epochs", type=int, default=None, help="DCMH training epochs (default: DCMH's choice for the input).")
@click.option("--k", type=int, default=5, show_default=True, help="Results shown per example query.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, split and training.")
@click.option("--threads", type=int, default=1, show_default=True, help=THREADS_HELP)
@one_line_errors
def demo_command(data: str | None, nbits: int, epochs: int | None, k: int, seed: int, threads: int) -> None:
    """Run the main job end to end on one data set.

    Trains DCMH, encodes both modalities, indexes them, queries text -> image and image -> text and
    prints the MAP.
    """
    from hashsearch.demo import run_demo

    run_demo(data=data, nbits=nbits, epochs=epochs, k=k, seed=seed, threads=threads, echo=click.echo)


# --- train and encode (data set -> model -> codes): logic in hashsearch/jobs.py --------------------

def _widths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 16,32,64, got {text!r}") from None


@main.command("train")
@click.option("--data", required=True, help="Data set name (wikipedia, mirflickr, nuswide, mnist, digits, synthetic) or a .mat/.npz/.parquet file.")
@click.option("--method", "methods", default="dcmh", show_default=True,
              help="Comma-separated learners: dcmh, scm, cca-itq, schn, dpsh, itq, lsh.")
@click.option("--nbits", default="16,32,64", show_default=True, help="Comma-separated code widths (multiples of 8).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder; models go to OUT/<data set>/<METHOD>-<nbits>.")
@click.option("--modality", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="What single-modal learners are trained on.")
@click.option("--epochs", type=int, default=None, help="Deep learners' epochs (default: their recommended settings).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of training.")
@click.option("--resume", is_flag=True, help="Continue interrupted training from each model's checkpoint (DCMH).")
@click.option("--threads", type=int, default=1, show_default=True, help=THREADS_HELP)
@one_line_errors
def train_command(data, methods, nbits, out, modality, epochs, seed, resume, threads) -> None:
    """Train learners and save them for encode and eval.

    Fits each method at each width on the data set's standard training split and saves it to
    OUT/<data set>/<METHOD>-<nbits> (read by encode, eval and bench --models).
    """
    from hashsearch import jobs

    jobs.train(data, [m.strip() for m in methods.split(",") if m.strip()], _widths(nbits), out,
               modality=modality, epochs=epochs, seed=seed, resume=resume, threads=threads, echo=click.echo)


@main.command("encode")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", help="Data set name or file, as for train.")
@click.option("--images", help="Instead of --data: image files (a folder, a glob such as 'photos/*.jpg', or one file).")
@click.option("--modality", type=click.Choice(["image", "text"]), default="image", show_default=True)
@click.option("--split", "which", type=click.Choice(["database", "query", "train", "all"]), default="database",
              show_default=True, help="Rows of the standard split to encode.")
@click.option("--out", required=True, type=click.Path(), help="Parquet file of (id, code) rows (--ray: a new folder of them).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the standard split.")
@click.option("--ray", "use_ray", is_flag=True, help="Encode in batches across Ray workers (Ray Data).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray workers (default: the cluster's CPUs).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for --ray (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def encode_command(model_dir, data, images, modality, which, out, seed, use_ray, workers, ray_address) -> None:
    """Turn a data set's items into codes with a trained model.

    Writes a Parquet file of (id: the data set row, code, labels) rows, ready for build-index
    (database) or query (queries); labels are class names where the data set has them. With
    --images DIR|GLOB instead of --data: image files, as (id, code, file) rows. With --ray: a new
    folder of Parquet files, encoded in batches across Ray workers.
    """
    from hashsearch import jobs
    from hashsearch.errors import InvalidInputError

    if (data is None) == (images is None):
        raise InvalidInputError("give exactly one of --data NAME and --images DIR|GLOB")
    if images is not None:
        rows, nbits = jobs.encode_images(model_dir, images, out)
        click.echo(f"wrote {out}: {rows} image codes of {nbits} bits (columns id, code, file)", err=True)
        return
    if use_ray:
        from hashsearch.raydata import encode_parallel

        rows = encode_parallel(model_dir, data, out, modality=modality, split=which, seed=seed, workers=workers,
                               address=ray_address)
        click.echo(f"wrote {out}/: {rows} {modality} codes ({which} rows) in Parquet files", err=True)
        return
    rows, nbits = jobs.encode(model_dir, data, out, modality=modality, split=which, seed=seed)
    click.echo(f"wrote {out}: {rows} {modality} codes of {nbits} bits ({which} rows)", err=True)


# --- eval (DATA+METRICS): logic in hashsearch/evaluation.py --------------------------------------

@main.command("eval")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, help="Data set name (wikipedia, mirflickr, nuswide, mnist, digits, synthetic) or a .mat/.npz/.parquet file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Report folder (default: MODEL_DIR/eval-<data>).")
@click.option("--topk", type=int, default=1000, show_default=True, help="K of mAP@K and the end of the top-K curve.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the standard split.")
@one_line_errors
def eval_command(model_dir: str, data: str, out_dir: str | None, topk: int, seed: int) -> None:
    """Score a trained model: mAP, lookup precision, curves.

    Scores the model on the data set's standard split and writes report.md, results.json and PNG
    curves. P@H<=r is the precision of hash lookup within radius r, shown with the share of
    queries that find anything at all ("no hits" when none does).
    """
    from pathlib import Path

    from hashsearch.evaluation import lookup_summary, run_eval

    out = out_dir or str(Path(model_dir) / f"eval-{Path(data).stem}")
    result, report = run_eval(model_dir, data, out, topk=topk, seed=seed)
    for task, scores in result["tasks"].items():
        click.echo(f"{result['dataset']} {result['nbits']} bits {task}: mAP@all {scores['map_all']:.4f}  "
                   f"mAP@{scores['k']} {scores['map_at_k']:.4f}  {lookup_summary(scores)}")
    click.echo(f"wrote {report}", err=True)

if __name__ == "__main__":
    main()
