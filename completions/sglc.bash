# sglc.bash: bash completion for sglc (installed as
# share/bash-completion/completions/sglc). Subcommands come from
# `sglc --help` and options from `sglc COMMAND --help`, so the completion
# always matches the sglc it completes.

# The options a help text lists: every -X / --name at a word start.
_sglc_help_opts() {
    "$@" --help 2>/dev/null | grep -oE -- '(^|[][ ,(|])--?[A-Za-z][A-Za-z0-9-]*' | sed 's/^[][ ,(|]//' | sort -u
}

_sglc() {
    local cur prev sglc cmd
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    sglc=${COMP_WORDS[0]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        local cmds
        cmds=$("$sglc" --help 2>/dev/null | awk '/^commands:/ {f = 1; next} f && /^  [a-z]/ {print $1} f && /^$/ {f = 0}')
        COMPREPLY=($(compgen -W "$cmds --help --version" -- "$cur"))
        return
    fi
    cmd=${COMP_WORDS[1]}
    case "$prev" in
        --model|--out|--backends|--prompts-file|--plot)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -I|--workloads|--programs)
            [ "$cmd" = bench ] && [ "$prev" = --programs ] && return
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W "text json dot" -- "$cur")); return ;;
        --policy) COMPREPLY=($(compgen -W "lpm fcfs random" -- "$cur")); return ;;
        --device) COMPREPLY=($(compgen -W "cpu cuda auto" -- "$cur")); return ;;
        --route) COMPREPLY=($(compgen -W "prefix round_robin" -- "$cur")); return ;;
        -O) COMPREPLY=($(compgen -W "0 1 2" -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        local dev=
        case "$cmd" in run|repl|batch|serve|bench|generate|model-info) dev=--device ;; esac
        COMPREPLY=($(compgen -W "$(_sglc_help_opts "$sglc" "$cmd") $dev" -- "$cur"))
        return
    fi
    case "$cmd" in
        run|check|dump) COMPREPLY=($(compgen -f -X '!*.sgl' -- "$cur") $(compgen -d -- "$cur")) ;;
        batch) COMPREPLY=($(compgen -d -- "$cur")) ;;
        *) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}
complete -o filenames -F _sglc sglc
