"""Real recorded speech from Debian's asterisk-core-sounds-en-wav, as audiofolder evaluation sets.

The package holds one studio speaker's isolated words at 8 kHz (CC-BY-SA-3.0), labelled by file name. We take the
spoken numbers (`digits/`), the letters (`letters/`) and the NATO alphabet (`phonetic/`), resample them to 16 kHz
and write two sets:

- `<out>/words/evaluation/`: every such clip, column `transcription` (ASR on real speech);
- `<out>/keywords/evaluation/`: the clips whose word is a Speech Commands keyword (zero ... nine), fitted to one
  second like the synthetic keywords, column `label` (keyword models on real speech).

    python -m esc.data.asterisk --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esc.data.audio import load_audio, write_flac
from esc.data.corpus import KEYWORDS, number_to_words
from esc.data.effects import fit_length, trim_silence
from esc.data.folders import prepare_split, write_metadata

DEFAULT_ROOT = Path("/usr/share/asterisk/sounds/en")  # a Debian alternatives link to en_US_f_Allison
SOURCE_RATE = 8000
SAMPLING_RATE = 16000
KEYWORD_SECONDS = 1.0
SPEAKER = "asterisk-allison"

# digits/ also holds ordinals, months and weekdays under coded names (h-1, mon-0, day-6); only the plain number
# words are taken.
NUMBER_WORDS = ("oh", "hundred", "thousand", "million", "billion")
NATO = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
        "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
        "xray", "yankee", "zulu")  # spelled as in the package's own transcript list


def word_for(category: str, stem: str) -> str | None:
    """The word spoken in `<category>/<stem>.wav`, or None for a file outside the chosen vocabulary."""
    if category == "digits":
        if stem.isdigit():
            return number_to_words(int(stem))
        return stem if stem in NUMBER_WORDS else None
    if category == "letters":
        return stem if (len(stem) == 1 and stem.isalpha()) or stem == "zed" else None
    if category == "phonetic":
        letter = stem.removesuffix("_p")
        if letter == "9":
            return "niner"
        return NATO[ord(letter) - ord("a")] if len(letter) == 1 and letter.isalpha() else None
    return None


def find_clips(root: str | Path = DEFAULT_ROOT) -> list[tuple[Path, str, str]]:
    """(path, category, word) of every usable clip under `root`, sorted by category then word.

    Raises FileNotFoundError, with the install command, when the package is not there.
    """
    root = Path(root)
    if not (root / "digits").is_dir():
        raise FileNotFoundError(
            f"no Asterisk English sounds at {root}; install them with: apt-get install asterisk-core-sounds-en-wav")
    clips = []
    for category in ("digits", "letters", "phonetic"):
        for path in (root / category).glob("*.wav"):
            word = word_for(category, path.stem)
            if word is not None:
                clips.append((path, category, word))
    return sorted(clips, key=lambda c: (c[1], c[2]))


def import_asterisk(out: str | Path, root: str | Path = DEFAULT_ROOT) -> dict[str, Path]:
    """Write the `words` and `keywords` evaluation sets under `out`; returns their split folders."""
    clips = find_clips(root)
    words_dir = prepare_split(Path(out) / "words" / "evaluation")
    keywords_dir = prepare_split(Path(out) / "keywords" / "evaluation")
    word_rows, keyword_rows = [], []
    for path, category, word in clips:
        audio = load_audio(path, SAMPLING_RATE, expected_rate=SOURCE_RATE)
        name = f"{category}_{word}.flac"
        source = f"{category}/{path.name}"
        write_flac(words_dir / name, audio, SAMPLING_RATE)
        word_rows.append({"file_name": name, "transcription": word, "category": category, "voice": SPEAKER,
                          "source": source})
        if word in KEYWORDS:
            clip = fit_length(trim_silence(audio), round(KEYWORD_SECONDS * SAMPLING_RATE))
            write_flac(keywords_dir / f"{word}.flac", clip, SAMPLING_RATE)
            keyword_rows.append({"file_name": f"{word}.flac", "label": word, "voice": SPEAKER, "source": source})
    write_metadata(words_dir, word_rows)
    write_metadata(keywords_dir, keyword_rows)
    return {"words": words_dir, "keywords": keywords_dir}


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m esc.data.asterisk --out DIR [--root ASTERISK_SOUNDS_EN]`."""
    parser = argparse.ArgumentParser(prog="python -m esc.data.asterisk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for words/ and keywords/")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the package's English sounds folder")
    args = parser.parse_args(argv)
    try:
        paths = import_asterisk(args.out, args.root)
    except (FileNotFoundError, FileExistsError) as err:
        parser.exit(1, f"error: {err}\n")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
