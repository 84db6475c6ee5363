#!/usr/bin/env bash
# The documentation's links resolve (issue 17): every relative Markdown link and #anchor in
# README.md, ARCHITECTURE.md, CHANGELOG.md and docs/*.md points at a file that exists and, for
# an anchor into a Markdown file, at one of its headings. No network: links with a scheme
# (https:, mailto:, …) are not followed.
#
# Anchors are matched the way GitHub makes them from a heading: its text without Markdown
# (code spans keep their text, links their label), lower-cased, every character that is not a
# letter, digit, space, `-` or `_` dropped, spaces turned into `-`; a repeated heading gets
# `-1`, `-2`, … Explicit anchors (`<a id="…">`, `<a name="…">`) count too.
# Links inside fenced code blocks and code spans are not links and are not checked.
#
#   scripts/check-docs.sh            # exit 0 when every link resolves, else 1 with a list
#   scripts/check-docs.sh FILE.md …  # only these files
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -gt 0 ]]; then
    files=("$@")
else
    files=(README.md ARCHITECTURE.md CHANGELOG.md docs/*.md)
fi
# A UTF-8 locale where there is one, so that letters beyond ASCII are letters.
if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then export LC_ALL=C.UTF-8; fi

# Lines "LINE<TAB>TARGET" of every link of a Markdown file (inline, images, reference
# definitions), outside fenced code and code spans.
links() {
    awk '
        /^[ \t]*(```|~~~)/ { fence = !fence; next }
        fence { next }
        {
            line = $0
            gsub(/``[^`]*``|`[^`]*`/, "", line)            # code spans
            if (match(line, /^ ? ? ?\[[^]]+\]:[ \t]+[^ \t]+/)) {   # [ref]: target
                def = substr(line, RSTART, RLENGTH)
                sub(/^ ? ? ?\[[^]]+\]:[ \t]+/, "", def)
                print NR "\t" def
                next
            }
            while (match(line, /\]\([^)]*\)/)) {                 # [text](target "title")
                target = substr(line, RSTART + 2, RLENGTH - 3)
                line = substr(line, RSTART + RLENGTH)
                sub(/^[ \t]+/, "", target)
                if (target ~ /^</) { sub(/^</, "", target); sub(/>.*$/, "", target) }
                else sub(/[ \t].*$/, "", target)
                print NR "\t" target
            }
        }
    ' "$1"
}

# The anchors of a Markdown file, one a line.
anchors() {
    awk '
        /^[ \t]*(```|~~~)/ { fence = !fence; next }
        fence { next }
        {
            line = $0
            while (match(line, /<a[ \t]+(id|name)="[^"]+"/)) {
                a = substr(line, RSTART, RLENGTH); sub(/^[^"]*"/, "", a); sub(/"$/, "", a)
                print a
                line = substr(line, RSTART + RLENGTH)
            }
        }
        /^ ? ? ?#+([ \t]|$)/ {
            h = $0
            sub(/^ ? ? ?#+[ \t]*/, "", h)
            sub(/[ \t]+#+[ \t]*$/, "", h)                        # closing hashes
            while (match(h, /!?\[[^]]*\]\([^)]*\)/)) {          # [label](url) -> label
                link = substr(h, RSTART, RLENGTH)
                sub(/^!?\[/, "", link); sub(/\]\(.*$/, "", link)
                h = substr(h, 1, RSTART - 1) link substr(h, RSTART + RLENGTH)
            }
            gsub(/<[^>]*>/, "", h)                               # inline HTML
            h = tolower(h)
            gsub(/[^[:alnum:] _-]/, "", h)
            gsub(/ /, "-", h)
            slug = h
            if (slug in seen) { seen[h]++; slug = h "-" seen[h] } else seen[slug] = 0
            print slug
        }
    ' "$1"
}

checked=0
broken=()
for file in "${files[@]}"; do
    [[ -f "$file" ]] || { broken+=("$file: no such file"); continue; }
    dir=$(dirname "$file")
    while IFS=$'\t' read -r line target; do
        [[ -n "$target" ]] || continue
        # Links with a scheme (https:, mailto:, file:, …) are not ours to check offline.
        [[ "$target" =~ ^[A-Za-z][A-Za-z0-9+.-]*: ]] && continue
        checked=$((checked + 1))
        path="${target%%#*}"
        anchor=""
        [[ "$target" == *"#"* ]] && anchor="${target#*#}"
        path="${path%%\?*}"
        # Percent-encoded spaces are the only encoding these pages use.
        path="${path//%20/ }"
        if [[ -z "$path" ]]; then
            resolved="$file"
        elif [[ "$path" == /* ]]; then
            resolved=".${path}"
        else
            resolved="$dir/$path"
        fi
        if [[ ! -e "$resolved" ]]; then
            broken+=("$file:$line: $target: $resolved does not exist")
            continue
        fi
        if [[ -n "$anchor" ]]; then
            if [[ -d "$resolved" ]]; then
                broken+=("$file:$line: $target: an anchor into a directory")
            elif [[ "$resolved" == *.md ]]; then
                if ! anchors "$resolved" | grep -qxF -- "$anchor"; then
                    broken+=("$file:$line: $target: no heading of $resolved makes the anchor #$anchor")
                fi
            fi
        fi
    done < <(links "$file")
done

if [[ ${#broken[@]} -gt 0 ]]; then
    printf 'check-docs: %s\n' "${broken[@]}" >&2
    printf 'check-docs: %d broken link(s) of %d checked\n' "${#broken[@]}" "$checked" >&2
    exit 1
fi
echo "check-docs: ${#files[@]} files, $checked relative links and anchors, all resolve"
