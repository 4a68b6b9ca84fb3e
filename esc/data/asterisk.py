"""Real recorded speech from Debian's asterisk-core-sounds-en-wav, as audiofolder evaluation sets.

The package holds one studio speaker's recordings at 8 kHz (CC-BY-SA-3.0): isolated words labelled by file name,
and several hundred read prompts ("Please leave your message after the tone.") whose text the companion package
asterisk-core-sounds-en lists in `core-sounds-en.txt.gz`. We resample them to 16 kHz and write three sets:

- `<out>/words/evaluation/`: the spoken numbers (`digits/`), letters (`letters/`) and NATO alphabet (`phonetic/`),
  column `transcription` (ASR on real isolated words);
- `<out>/keywords/evaluation/`: the words that are Speech Commands keywords (zero ... nine), fitted to one second
  like the synthetic keywords, column `label` (keyword models on real speech);
- `<out>/prompts/evaluation/`: every other transcribed prompt of at most 30 s (Whisper's window), column
  `transcription` (ASR on real read sentences). Notes in the list that are not spoken (`(simple tone sound
  plays)`) are dropped, tones (`[beep]`, `<beep ascending>`) skipped, and the keypad signs read as words
  (`*` star, `#` pound). Written only when the transcript list is there (Debian installs it under /usr/share/doc,
  which slim images may leave out).
- `<out>/prompts/calibration/`, only when asked for (`--calibration-prompts N`): N of the prompts, drawn by seed,
  moved out of the evaluation split, to calibrate on real speech. The draw takes whole groups of prompts with the
  same text (the package records several sentences more than once), so the two splits share no sentence; they do
  share the one speaker.

    python -m esc.data.asterisk --out DIR [--calibration-prompts N --seed S]
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from esc.data.audio import load_audio, write_flac
from esc.data.corpus import KEYWORDS, number_to_words
from esc.data.effects import fit_length, trim_silence
from esc.data.folders import prepare_split, write_metadata
from esc.metrics import normalize_text

DEFAULT_ROOT = Path("/usr/share/asterisk/sounds/en")  # a Debian alternatives link to en_US_f_Allison
DEFAULT_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MAX_PROMPT_SECONDS = 30.0  # Whisper reads one 30 s window; a longer clip would be cut against its full text
SOURCE_RATE = 8000
SAMPLING_RATE = 16000
KEYWORD_SECONDS = 1.0
SPEAKER = "asterisk-allison"

WORD_FOLDERS = ("digits", "letters", "phonetic")
NOT_PROMPTS = (*WORD_FOLDERS, "silence")  # the isolated words, and timed silences

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
    for category in WORD_FOLDERS:
        for path in (root / category).glob("*.wav"):
            word = word_for(category, path.stem)
            if word is not None:
                clips.append((path, category, word))
    return sorted(clips, key=lambda c: (c[1], c[2]))


def spoken_text(listed: str) -> str | None:
    """The words a prompt says, from its line in the transcript list; None for tones and silences."""
    if re.search(r"[\[<]", listed):
        return None
    text = re.sub(r"\([^)]*\)", " ", listed).replace("*", " star ").replace("#", " pound ")
    return " ".join(text.split()) or None


def find_prompts(root: str | Path = DEFAULT_ROOT,
                 transcripts: str | Path = DEFAULT_TRANSCRIPTS) -> list[tuple[Path, str, str]]:
    """(path, name, text) of every transcribed prompt of at most 30 s outside the word folders, sorted by name.

    Raises FileNotFoundError, naming the package, when the transcript list is not there."""
    root, transcripts = Path(root), Path(transcripts)
    if not transcripts.is_file():
        raise FileNotFoundError(f"no transcript list at {transcripts}; it comes with asterisk-core-sounds-en "
                                "(apt-get install asterisk-core-sounds-en-wav; keep /usr/share/doc in the image)")
    prompts = []
    with gzip.open(transcripts, "rt", encoding="utf-8") as lines:
        for line in lines:
            name, colon, listed = line.partition(":")
            name, text = name.strip(), spoken_text(listed)
            path = root / f"{name}.wav"
            if (not colon or line.startswith(";") or text is None or name.split("/")[0] in NOT_PROMPTS
                    or not path.is_file() or soundfile.info(path).duration > MAX_PROMPT_SECONDS):
                continue
            prompts.append((path, name, text))
    return sorted(prompts, key=lambda p: p[1])


def split_prompts(prompts: Sequence[tuple[Path, str, str]], count: int,
                  seed: int) -> tuple[list[tuple[Path, str, str]], list[tuple[Path, str, str]]]:
    """(calibration, evaluation): at least `count` prompts drawn by `seed` for calibration, the rest for evaluation.

    Prompts are drawn in groups of one normalised text, so no sentence is in both splits; the last group drawn may
    take the calibration split past `count`. Both keep the input order."""
    if not 0 < count < len(prompts):
        raise ValueError(f"calibration prompts must be between 1 and {len(prompts) - 1}, got {count}")
    groups: dict[str, list[int]] = {}
    for index, (_, _, text) in enumerate(prompts):
        groups.setdefault(normalize_text(text), []).append(index)
    texts = list(groups)
    chosen: set[int] = set()
    for group in np.random.default_rng(seed).permutation(len(texts)):
        if len(chosen) >= count:
            break
        chosen.update(groups[texts[group]])
    return ([p for i, p in enumerate(prompts) if i in chosen], [p for i, p in enumerate(prompts) if i not in chosen])


def write_prompts(split_dir: Path, prompts: Sequence[tuple[Path, str, str]]) -> Path:
    """The prompts resampled to 16 kHz as FLAC in a new `split_dir`, with their text as `transcription`."""
    prepare_split(split_dir)
    rows = []
    for path, name, text in prompts:
        file_name = f"{name.replace('/', '_')}.flac"
        write_flac(split_dir / file_name, load_audio(path, SAMPLING_RATE, expected_rate=SOURCE_RATE), SAMPLING_RATE)
        rows.append({"file_name": file_name, "transcription": text, "voice": SPEAKER, "source": f"{name}.wav"})
    write_metadata(split_dir, rows)
    return split_dir


def import_asterisk(out: str | Path, root: str | Path = DEFAULT_ROOT,
                    transcripts: str | Path | None = DEFAULT_TRANSCRIPTS, calibration_prompts: int = 0,
                    seed: int = 0) -> dict[str, Path]:
    """Write the `words`, `keywords` and (when `transcripts` exists) `prompts` evaluation sets under `out`, and a
    `prompts` calibration split of `calibration_prompts` drawn by `seed` when that is above 0; returns their split
    folders (the calibration split as `prompts_calibration`)."""
    clips = find_clips(root)
    prompts = find_prompts(root, transcripts) if transcripts and Path(transcripts).is_file() else []
    if calibration_prompts and not prompts:
        raise FileNotFoundError(f"calibration prompts asked for, but no transcript list at {transcripts}")
    calibration, prompts = split_prompts(prompts, calibration_prompts, seed) if calibration_prompts else ([], prompts)
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
    paths = {"words": words_dir, "keywords": keywords_dir}
    if prompts:
        paths["prompts"] = write_prompts(Path(out) / "prompts" / "evaluation", prompts)
    if calibration:
        paths["prompts_calibration"] = write_prompts(Path(out) / "prompts" / "calibration", calibration)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m esc.data.asterisk --out DIR [--root ASTERISK_SOUNDS_EN]`."""
    parser = argparse.ArgumentParser(prog="python -m esc.data.asterisk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for words/ and keywords/")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the package's English sounds folder")
    parser.add_argument("--transcripts", type=Path, default=DEFAULT_TRANSCRIPTS,
                        help="the prompts' transcript list (core-sounds-en.txt.gz); without it no prompts/ set")
    parser.add_argument("--calibration-prompts", type=int, default=0,
                        help="move this many prompts (whole groups of one text) to prompts/calibration; 0 = none")
    parser.add_argument("--seed", type=int, default=0, help="which prompts --calibration-prompts draws")
    args = parser.parse_args(argv)
    if not args.transcripts.is_file():
        print(f"note: no transcript list at {args.transcripts}: writing words/ and keywords/ only")
    try:
        paths = import_asterisk(args.out, args.root, args.transcripts, args.calibration_prompts, args.seed)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
