"""Tokenize a corpus once, for training to memory-map.

    python -m fusedops.data prepare --data corpus.txt                 # characters
    python -m fusedops.data prepare --data books/ --tokenizer bpe --vocab-size 8192
    python -m fusedops.data prepare --data web/ --tokenizer gpt2 --tokenizer-dir gpt2/
    python -m fusedops.train --data books-bpe8192 ...                 # train on the result

--data is a text file or a folder of them (every file under it, in sorted order, separated by
the end-of-text token for BPE and GPT-2 tokens). The text is read in pieces of about a
megabyte, so a corpus larger than memory works; a progress bar counts the bytes. The result
is a token folder (default: beside the data, `<name>-<tokenizer>`): tokens.bin (uint16 ids, or
uint32 for vocabularies over 65,536) and meta.json (the tokenizer, sizes, the text's
fingerprint). The last 10% of the tokens are the validation split.

Tokenizers: `char` (one token per distinct character), `bpe` (a byte-level BPE of
--vocab-size tokens trained on the corpus in a first pass, by the `tokenizers` package),
`gpt2` (GPT-2's vocab.json and merges.txt read from --tokenizer-dir; nothing is downloaded).

Exit codes: 0 when done; 2 with one line on stderr for bad arguments or data.
"""
import argparse
import sys

from .tokens import prepare


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"fusedops.data: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog="python -m fusedops.data", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    q = sub.add_parser("prepare", help="tokenize a corpus into a token folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--data", required=True, metavar="FILE_OR_DIR", help="the text to tokenize")
    q.add_argument("--tokenizer", choices=("char", "bpe", "gpt2"), default="char",
                   help="(default: char)")
    q.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (default: 4096)")
    q.add_argument("--tokenizer-dir", metavar="DIR",
                   help="folder with GPT-2's vocab.json and merges.txt (--tokenizer gpt2)")
    q.add_argument("--encoding", help="the text's encoding (default: UTF-8, checked)")
    q.add_argument("--out", metavar="DIR", help="token folder (default: <data>-<tokenizer>)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.vocab_size < 257:
        p.error("--vocab-size must be an integer >= 257")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        meta = prepare(args.data, args.tokenizer, args.vocab_size, args.tokenizer_dir,
                       args.encoding, args.out, progress=not args.no_progress)
    except (OSError, ValueError) as e:
        msg = " ".join(str(e).splitlines())
        print(msg if msg.startswith("fusedops.") else f"fusedops.data: {msg}", file=sys.stderr,
              flush=True)
        sys.exit(2)
    print(f"{meta['out']}: {meta['tokens']:,} {meta['dtype']} tokens ({meta['val_tokens']:,} for "
          f"validation) from {meta['files']} file(s), vocabulary "
          f"{meta['tokenizer'].get('kind', 'char')}; train with: python -m fusedops.train "
          f"--data {meta['out']}")


if __name__ == "__main__":
    main()
