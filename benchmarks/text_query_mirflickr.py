"""Free-text queries on MIRFLICKR-25K through `hashsearch query --text`'s code path, scored against the labels.

The shared MIRFLICKR copy has tags and labels but no images, so the index holds the database items'
text codes (T->T): a DCMH trained at its defaults on the tags alone (`hashsearch train --data mirflickr
--method dcmh`, which records the 1,386-tag vocabulary), database encoded with `hashsearch encode
--modality text`. For each query: P@K = share of the top K results carrying any of the query's labels
(ties at the K-th distance broken by ascending id, as the index does), beside the share of the
database carrying them (what random results would score), and the share of results whose tags
contain a query word. Prints a Markdown table and the top results' tags and labels.

Run (after train / encode / build-index, see the report):
  python benchmarks/text_query_mirflickr.py --model MODEL --index INDEX [--topk 10,100]
"""
from __future__ import annotations

import argparse

import numpy as np

from hashsearch.index import HammingIndex
from hashsearch.querying import text_query

# query words -> the MIRFLICKR labels they name (beach -> sea: 68 % of items tagged beach carry label sea)
QUERIES = {
    "sunset beach clouds": ("sunset", "sea", "clouds"),
    "dog": ("dog",),
    "baby": ("baby",),
    "bird": ("bird",),
    "car": ("car",),
    "flower macro": ("flower",),
    "night city lights": ("night",),
    "food": ("food",),
    "portrait woman": ("portrait", "female"),
    "tree": ("tree",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--topk", default="10,100")
    parser.add_argument("--show", type=int, default=5, help="top results whose tags and labels are printed")
    args = parser.parse_args()
    ks = [int(k) for k in args.topk.split(",")]
    index = HammingIndex.load(args.index, mmap=True)
    meta = index.metadata.to_pydict()
    n = len(index)
    lines = ["| query | ignored words | labels | " + " | ".join(f"P@{k}" for k in ks) + " | database share | "
             + " | ".join(f"tag match @{k}" for k in ks) + " | distances of the top 10 |",
             "|---|---|---|" + "---|" * (2 * len(ks) + 2)]
    examples = []
    for query, labels in QUERIES.items():
        hits, unknown = text_query(index, args.model, query, topk=max(ks))
        relevant = [bool(set(h["labels"]) & set(labels)) for h in hits]
        words = set(query.split())
        tag_match = [bool(set(h["tags"]) & words) for h in hits]
        base = np.mean([bool(set(ls) & set(labels)) for ls in meta["labels"]])
        lines.append(f"| {query} | {', '.join(unknown) or '-'} | {', '.join(labels)} | "
                     + " | ".join(f"{np.mean(relevant[:k]):.2f}" for k in ks) + f" | {base:.3f} | "
                     + " | ".join(f"{np.mean(tag_match[:k]):.2f}" for k in ks)
                     + f" | {', '.join(str(h['distance']) for h in hits[:10])} |")
        examples.append(f"\n**{query}** (top {args.show}):")
        examples += [f"- id {h['id']}, d = {h['distance']}: tags [{' '.join(h['tags'])}], labels [{', '.join(h['labels'])}]"
                     for h in hits[:args.show]]
    print(f"Database: {n} MIRFLICKR-25K items (text codes, {index.nbits} bits).\n")
    print("\n".join(lines))
    print("\n".join(examples))


if __name__ == "__main__":
    main()
