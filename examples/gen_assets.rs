//! Generates the shell completions (completions/) and man pages (man/) from the clap
//! definition. Run after changing any flag, and commit the result:
//!
//!     cargo run --example gen_assets
//!
//! tests/assets.rs fails when the committed files are stale.
//!
//! The completions offer only what a user types: clap_complete would also offer hidden
//! flags and subcommands (`--refresh`, `remote upload`), so it is given a copy of the
//! definition without them. Where the shell completes from a command (bash, zsh, fish),
//! `memo show` and `memo rm` complete cache keys from the hidden `memo __keys`.
//!
//! Each man page gets EXAMPLES, EXIT STATUS and SEE ALSO sections written here, and a
//! page ships for every subcommand it names (`memo-remote-check(1)` included).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// Writes every generated file under `root` and returns their paths relative to it.
pub fn generate(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let completions = root.join("completions");
    fs::create_dir_all(&completions)?;
    let public = public_only(&memo_cli::cli::Cli::command());
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut cmd = public.clone();
        let path = clap_complete::generate_to(shell, &mut cmd, "memo", &completions)?;
        add_key_completion(shell, &path)?;
        written.push(path.strip_prefix(root).expect("under root").to_path_buf());
    }
    let man = root.join("man");
    fs::create_dir_all(&man)?;
    // As clap_mangen::generate_to does: no `help` subcommand (it has no page), and a
    // built definition, so that each subcommand knows its page name (memo-remote-check).
    let mut cmd = memo_cli::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(&cmd, &man, &mut written)?;
    written.sort();
    Ok(written)
}

/// A copy of `cmd` without its hidden arguments and subcommands. clap cannot remove an
/// argument from a command, so the copy is built up from the visible parts.
fn public_only(cmd: &Command) -> Command {
    // Names must be 'static; this process (or test) is short-lived.
    let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
    let mut public = Command::new(leak(cmd.get_name().to_string()))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(public_only),
        );
    if let Some(about) = cmd.get_about() {
        public = public.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        public = public.version(leak(version.to_string()));
    }
    public
}

/// Appends what makes `memo show` and `memo rm` complete cache keys, for the shells that
/// complete from a command. `memo __keys` prints nothing (and its errors go nowhere) when
/// there is no cache, so a failure completes nothing rather than printing into the line.
fn add_key_completion(shell: Shell, path: &Path) -> io::Result<()> {
    let script = fs::read_to_string(path)?;
    let script = match shell {
        Shell::Bash => format!("{script}{BASH_KEYS}"),
        Shell::Fish => format!("{script}{FISH_KEYS}"),
        Shell::Zsh => zsh_with_keys(&script),
        _ => return Ok(()),
    };
    fs::write(path, script)
}

const BASH_KEYS: &str = r#"
# Cache keys for `memo show KEY` and `memo rm KEY...` (examples/gen_assets.rs).
_memo_with_keys() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i sub="" cache_dir=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --cache-dir) cache_dir=(--cache-dir "${COMP_WORDS[i+1]}"); i=$((i + 1)) ;;
            --remote) i=$((i + 1)) ;;
            -*) ;;
            *) [[ -z "$sub" ]] && sub="${COMP_WORDS[i]}" ;;
        esac
    done
    if [[ ( "$sub" == show || "$sub" == rm ) && "$cur" != -* && "$prev" != --command ]]; then
        local keys
        keys="$("${COMP_WORDS[0]}" "${cache_dir[@]}" __keys 2>/dev/null)"
        COMPREPLY=($(compgen -W "$keys" -- "$cur"))
        return 0
    fi
    _memo "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _memo_with_keys -o nosort -o bashdefault -o default memo
else
    complete -F _memo_with_keys -o bashdefault -o default memo
fi
"#;

const FISH_KEYS: &str = r#"
# Cache keys for `memo show KEY` and `memo rm KEY...` (examples/gen_assets.rs).
complete -c memo -n "__fish_seen_subcommand_from show rm" -f -a "(memo __keys 2>/dev/null)"
"#;

const ZSH_KEYS: &str = r#"
# Cache keys for `memo show KEY` and `memo rm KEY...` (examples/gen_assets.rs).
(( $+functions[_memo_keys] )) ||
_memo_keys() {
    local -a keys
    keys=(${(f)"$(memo __keys 2>/dev/null)"})
    _describe -t keys 'cache key' keys
}

"#;

/// The zsh script with the KEY arguments of `show` and `rm` completed by `_memo_keys`.
fn zsh_with_keys(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + ZSH_KEYS.len());
    for line in script.lines() {
        let is_key = line.trim_start().starts_with("':key -- ")
            || line.trim_start().starts_with("'*::keys -- ");
        match is_key {
            true => out.push_str(&line.replace(":_default'", ":_memo_keys'")),
            false => out.push_str(line),
        }
        out.push('\n');
    }
    let anchor = "if [ \"$funcstack[1]\" = \"_memo\" ]; then";
    out.replacen(anchor, &format!("{ZSH_KEYS}{anchor}"), 1)
}

/// Writes the page of `cmd` and of each visible subcommand, recursively.
fn write_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    // Every page's footer names memo and its version, not the subcommand.
    let source = format!("memo {}", env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone()).source(source);
    let file = man.get_filename();
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    for (title, body) in sections(name) {
        out.extend(format!(".SH \"{title}\"\n").bytes());
        out.extend(body.bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    fs::write(dir.join(&file), out)?;
    written.push(PathBuf::from("man").join(file));
    Ok(())
}

/// The hand-written sections of the page `name` (memo, memo-run, memo-remote-check...),
/// already in roff.
fn sections(name: &str) -> Vec<(&'static str, String)> {
    let mut sections = Vec::new();
    match name {
        "memo" => {
            sections.push(("EXAMPLES", examples(MEMO_EXAMPLES)));
            sections.push(("EXIT STATUS", paragraphs(&[EXIT_STATUS, EXIT_125])));
            sections.push(("ENVIRONMENT", paragraphs(&[ENVIRONMENT])));
        }
        "memo-run" => {
            sections.push((
                "WHERE THE COMMAND STARTS",
                paragraphs(&[memo_cli::cli::RUN_ARGS_HELP]),
            ));
            sections.push(("EXAMPLES", examples(RUN_EXAMPLES)));
            sections.push(("EXIT STATUS", paragraphs(&[EXIT_STATUS, EXIT_125])));
        }
        "memo-explain" => {
            sections.push((
                "WHERE THE COMMAND STARTS",
                paragraphs(&[memo_cli::cli::RUN_ARGS_HELP]),
            ));
            sections.push(("EXAMPLES", examples(EXPLAIN_EXAMPLES)));
            sections.push(("EXIT STATUS", paragraphs(&[EXPLAIN_EXIT, EXIT_125])));
        }
        _ => sections.push(("EXIT STATUS", paragraphs(&[MANAGE_EXIT]))),
    }
    let see_also = match name {
        "memo" => "memo\\-run(1), memo\\-explain(1), memo\\-show(1), memo\\-ls(1), memo\\-gc(1)"
            .to_string(),
        _ => "memo(1)".to_string(),
    };
    sections.push(("SEE ALSO", format!("{see_also}\n")));
    sections
}

const MEMO_EXAMPLES: &[(&str, &str)] = &[
    (
        "Build a report once; later calls replay its output and restore report.html:",
        "memo run -i data.csv -o report.html -- ./make_report.sh data.csv report.html",
    ),
    (
        "In a Makefile, with every prerequisite an input:",
        "memo run -i $^ -o $@ -- cc -o $@ $^",
    ),
    (
        "Why would this call not hit?",
        "memo explain -i data.csv -- ./make_report.sh data.csv report.html",
    ),
    ("What is cached, and what it saved:", "memo ls; memo stats"),
];

const RUN_EXAMPLES: &[(&str, &str)] = &[
    (
        "Several inputs and outputs before '--':",
        "memo run -i src/ Cargo.lock -o target/report.txt -- ./report.sh",
    ),
    (
        "A pipeline runs through a shell:",
        "memo run -i data.csv -- sh -c 'sort data.csv | uniq -c'",
    ),
    (
        "Piped input is keyed on and passed on only with --stdin:",
        "curl -s https://example.com/data | memo run --stdin -- ./parse",
    ),
    (
        "Reuse a result for a day, then refresh it in the background for an hour more:",
        "memo run --ttl 1d --stale 1h -- ./slow-query.sh",
    ),
];

const EXPLAIN_EXAMPLES: &[(&str, &str)] = &[(
    "Say whether the same call would hit, and if not what changed:",
    "memo explain -i data.csv -- ./make_report.sh data.csv report.html",
)];

const EXIT_STATUS: &str =
    "The command's own exit code, replayed on a hit; 128+N when it was killed by \
signal N, or when memo itself was stopped by signal N (nothing is stored then); 126 when the \
command cannot be executed; 127 when it is not found.";

const EXIT_125: &str = "125 when memo itself fails or the invocation is invalid (a malformed flag, \
an invalid value from a flag, the environment or the config file, a missing input); nothing is run.";

const EXPLAIN_EXIT: &str = "0 when memo run would replay a stored result, 1 when it would run the \
command.";

const MANAGE_EXIT: &str = "0 on success; 1 when memo rm matched nothing; 125 when memo fails, for \
example on a cache directory it cannot use.";

const ENVIRONMENT: &str = "MEMO_DIR (the cache directory), MEMO_MAX_SIZE, MEMO_TTL, MEMO_STALE, \
MEMO_VERBOSE, MEMO_CACHE_FAILURES, MEMO_UMASK, MEMO_CONFIG (the config file), MEMO_DISABLE=1 \
(bypass memo entirely); for the shared cache MEMO_REMOTE, MEMO_REMOTE_MODE, \
MEMO_REMOTE_COMPRESSION, MEMO_REMOTE_NAMESPACE, MEMO_REMOTE_READ, MEMO_REMOTE_SIGNING_KEY, MEMO_REMOTE_USER, \
MEMO_REMOTE_PASSWORD, MEMO_REMOTE_TOKEN, MEMO_REMOTE_CA. Flags win over the environment, \
which wins over the config file.";

fn paragraphs(texts: &[&str]) -> String {
    texts
        .iter()
        .map(|text| format!(".PP\n{}\n", escape(text)))
        .collect()
}

fn examples(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(what, command)| {
            format!(
                ".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n",
                escape(what),
                escape(command)
            )
        })
        .collect()
}

/// Text as roff shows it literally: backslashes and hyphens escaped, and no line that
/// starts with a control character.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in generate(root)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
