#!/usr/bin/env bash
# Regenerate the speech samples in sample_data/audio/ and their manifest.csv.
#
# Development-time tool only: the generated files are committed to the repository, so
# users of the project do NOT need espeak-ng or ffmpeg.  Run it only if you want to change
# or add recordings:
#
#     sudo apt-get install -y espeak-ng ffmpeg     # Debian/Ubuntu
#     scripts/make_sample_audio.sh
#
# Each clip is synthesized with espeak-ng (a different voice/language per clip) and then
# encoded with ffmpeg into a different container/codec, so that transcription jobs see
# wav, mp3, flac, ogg (Vorbis), m4a (AAC) and webm (Opus) input.  Mono, 16-24 kHz, a few
# seconds each, < 1 MB in total.  Output is deterministic for a given espeak-ng/ffmpeg
# version (metadata stripped, bitexact flags).
#
# manifest.csv columns: path (relative to the manifest's folder), lang (ISO 639-1),
# spoken_text (what was said; for Chinese, espeak-ng is fed tone-numbered pinyin because
# its Mandarin voice cannot read Hanzi reliably, but spoken_text holds the Hanzi).
set -euo pipefail

cd "$(dirname "$0")/.."
out=sample_data/audio

for tool in espeak-ng ffmpeg ffprobe; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install espeak-ng ffmpeg)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# file | espeak-ng voice | words per minute | lang | text given to espeak-ng | spoken_text ("" = same)
clips=(
    "en_order_update.wav|en-us|160|en|Hello, this is a short test recording. Your order has shipped and should arrive on Thursday. If you have any questions, just reply to this message.|"
    "en_meeting_intro.mp3|en-gb-x-rp|165|en|Good morning, everyone. Today we will review the quarterly budget, and then discuss the new hiring plan.|"
    "zh_weather.flac|cmn-latn-pinyin|140|zh|jin1 tian1 tian1 qi4 hen2 hao3, wo3 men5 xia4 wu3 yi4 qi3 qu4 gong1 yuan2 san4 bu4 ba5. ming2 tian1 ke3 neng2 hui4 xia4 yu3, ji4 de5 dai4 san3.|今天天气很好，我们下午一起去公园散步吧。明天可能会下雨，记得带伞。"
    "es_reunion.ogg|es|155|es|Buenos días. La reunión de mañana empieza a las diez en la sala dos. Por favor, traed el informe trimestral.|"
    "de_zugansage.m4a|de|155|de|Guten Tag. Der Zug nach München hat heute etwa zwanzig Minuten Verspätung. Wir bitten um Entschuldigung.|"
    "fr_message.webm|fr-fr|155|fr|Bonjour, c'est Claire. Je serai en retard de dix minutes, commencez sans moi. À tout à l'heure !|"
)

# ffmpeg audio options per output extension
codec_args() {
    case "$1" in
        wav)  echo "-ar 16000 -c:a pcm_s16le" ;;
        mp3)  echo "-ar 22050 -c:a libmp3lame -b:a 48k" ;;
        flac) echo "-ar 16000 -c:a flac -compression_level 8" ;;
        ogg)  echo "-ar 22050 -c:a libvorbis -q:a 2" ;;
        m4a)  echo "-ar 22050 -c:a aac -b:a 48k -movflags +faststart" ;;
        webm) echo "-ar 24000 -c:a libopus -b:a 24k" ;;
        *)    echo "unsupported extension: $1" >&2; return 1 ;;
    esac
}

csv_field() { local s=${1//\"/\"\"}; printf '"%s"' "$s"; }

manifest="$tmp/manifest.csv"
echo "path,lang,spoken_text" >"$manifest"

for clip in "${clips[@]}"; do
    IFS='|' read -r file voice wpm lang text spoken <<<"$clip"
    spoken=${spoken:-$text}
    espeak-ng -v "$voice" -s "$wpm" -w "$tmp/raw.wav" "$text"
    # shellcheck disable=SC2046  # word splitting of codec_args is intended
    ffmpeg -nostdin -hide_banner -loglevel error -y -i "$tmp/raw.wav" -ac 1 $(codec_args "${file##*.}") \
        -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$out/$file"
    dur=$(ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$out/$file")
    printf '%-22s %-16s %5.1f s %7d bytes\n' "$file" "$voice" "$dur" "$(stat -c %s "$out/$file")"
    printf '%s,%s,%s\n' "$(csv_field "$file")" "$(csv_field "$lang")" "$(csv_field "$spoken")" >>"$manifest"
done

cp "$manifest" "$out/manifest.csv"
echo "total: $(du -cb "$out"/* | tail -1 | cut -f1) bytes in $out/"
