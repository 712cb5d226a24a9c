//! Makefile and script ergonomics (issue 10): several paths per `-i`/`-o`, a shell line
//! given as one word, piped input that the command would not see, typo'd subcommands,
//! shell completions and the man pages.

use std::fs;
use std::process::Stdio;

use crate::support::*;

#[test]
fn several_inputs_and_outputs_before_double_dash_are_all_declared() {
    let env = TestEnv::new();
    env.write("a.c", "int a;");
    env.write("b.h", "int b;");
    env.tool("cat a.c b.h > out1; echo two > out2; echo built");
    let args = [
        "run", "-i", "a.c", "b.h", "-o", "out1", "out2", "--", "./tool",
    ];
    let out = env.run(args);
    assert_success(&out);
    assert_eq!(stdout(&out), "built\n");
    assert_eq!(env.count(), 1);
    assert!(!env.ran(env.memo(args)), "same inputs: a hit");

    // Both outputs are restored on a hit.
    fs::remove_file(env.path("out1")).unwrap();
    fs::remove_file(env.path("out2")).unwrap();
    assert!(!env.ran(env.memo(args)));
    assert_eq!(env.read("out1"), b"int a;int b;");
    assert_eq!(env.read("out2"), b"two\n");

    // The second path is an input too: changing it is a miss.
    env.write("b.h", "int b2;");
    assert!(env.ran(env.memo(args)));
    let explained = env.run([
        "explain", "-i", "a.c", "b.h", "-o", "out1", "out2", "--", "./tool",
    ]);
    assert_success(&explained);
}

#[test]
fn explain_takes_several_inputs_before_double_dash() {
    let env = TestEnv::new();
    env.write("a", "1");
    env.write("b", "2");
    env.tool("echo hi");
    assert!(env.ran(env.memo(["run", "-i", "a", "b", "--", "./tool"])));
    assert_success(&env.run(["explain", "-i", "a", "b", "--", "./tool"]));
    env.write("b", "3");
    let out = env.run(["explain", "-i", "a", "b", "--", "./tool"]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains('b'), "{}", stdout(&out));
}

#[test]
fn a_word_before_double_dash_that_belongs_to_no_option_is_named() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let out = env.run(["run", "--salt", "v1", "stray", "--", "./tool"]);
    assert_one_line_error(&out, 125, "'stray'");
    assert!(stderr(&out).contains("after '--'"), "{}", stderr(&out));
    let out = env.run(["run", "-v", "./tool", "--", "x"]);
    assert_one_line_error(&out, 125, "'./tool'");
    let out = env.run(["explain", "-e", "HOME", "stray", "--", "./tool"]);
    assert_one_line_error(&out, 125, "'stray'");
    assert_eq!(env.count(), 0);
}

#[test]
fn without_double_dash_the_first_plain_word_starts_the_command() {
    let env = TestEnv::new();
    env.write("a", "1");
    env.tool("echo \"args: $*\"");
    let out = env.run(["run", "-i", "a", "./tool", "-l"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "args: -l\n");
    // `a` is still the (only) input: changing it is a miss.
    assert!(!env.ran(env.memo(["run", "-i", "a", "./tool", "-l"])));
    env.write("a", "2");
    assert!(env.ran(env.memo(["run", "-i", "a", "./tool", "-l"])));

    let out = env.run(["run", "-v", "./tool", "-l", "-i", "x"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "args: -l -i x\n");
    assert!(stderr(&out).contains("miss"), "{}", stderr(&out));
}

#[test]
fn help_states_where_the_command_starts() {
    let env = TestEnv::new();
    let out = env.run(["run", "--help"]);
    assert_success(&out);
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("with '--', everything before it is memo's"),
        "{help}"
    );
    assert!(
        help.contains("Without '--', -i and -o take one path each"),
        "{help}"
    );
}

#[test]
fn a_shell_line_as_one_word_is_told_to_use_sh_c() {
    let env = TestEnv::new();
    let out = env.run(["run", "--", "echo hi | wc -c"]);
    assert_one_line_error(&out, 127, "memo run -- sh -c 'echo hi | wc -c'");
    let out = env.run(["explain", "--", "echo it's"]);
    assert_one_line_error(&out, 127, "memo explain -- sh -c 'echo it'\\''s'");
    assert!(env.entries().is_empty());
}

#[test]
fn a_program_whose_name_has_a_space_still_runs() {
    let env = TestEnv::new();
    env.script("my tool", "echo spaced");
    let out = env.run(["run", "--", "./my tool"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "spaced\n");
}

const STDIN_NOTE: &str = "add --stdin";

fn notes(out: &std::process::Output) -> usize {
    stderr(out).matches(STDIN_NOTE).count()
}

#[test]
fn piped_input_without_stdin_flag_is_noted_once() {
    let env = TestEnv::new();
    env.tool("wc -c");
    let out = env.run_with_stdin(run_tool(&["-v"]), b"data for the command\n");
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "0");
    assert_eq!(notes(&out), 1, "{}", stderr(&out));
    let note = stderr(&out)
        .lines()
        .find(|l| l.contains(STDIN_NOTE))
        .unwrap()
        .to_string();
    assert!(note.starts_with("memo: "), "{note}");
    // On a hit too: the input is not used either way.
    let out = env.run_with_stdin(run_tool(&[]), b"data\n");
    assert_eq!(notes(&out), 1, "{}", stderr(&out));
    assert_eq!(env.count(), 1);
}

#[test]
fn an_empty_pipe_whose_writer_is_gone_is_not_noted() {
    let env = TestEnv::new();
    env.tool("wc -c");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(writer);
    let out = env.memo(run_tool(&[])).stdin(reader).output().unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "");

    // The same pipe with bytes in it is noted.
    let (reader, mut writer) = std::io::pipe().unwrap();
    std::io::Write::write_all(&mut writer, b"lost\n").unwrap();
    drop(writer);
    let out = env.memo(run_tool(&[])).stdin(reader).output().unwrap();
    assert_eq!(notes(&out), 1, "{}", stderr(&out));
}

#[test]
fn input_redirected_from_a_file_is_noted_unless_empty() {
    let env = TestEnv::new();
    env.tool("wc -c");
    let data = env.write("data.txt", "some lines\n");
    let out = env
        .memo(run_tool(&[]))
        .stdin(fs::File::open(&data).unwrap())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(notes(&out), 1, "{}", stderr(&out));

    let empty = env.write("empty.txt", "");
    let out = env
        .memo(run_tool(&[]))
        .stdin(fs::File::open(&empty).unwrap())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

#[test]
fn no_stdin_note_with_stdin_flag_dev_null_or_explain() {
    let env = TestEnv::new();
    env.tool("wc -c");
    let out = env.run_with_stdin(run_tool(&["--stdin"]), b"abc");
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "3");
    assert_eq!(stderr(&out), "");

    let out = env
        .memo(run_tool(&[]))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "");

    let out = env.run_with_stdin(["explain", "--", "./tool"], b"abc");
    assert_eq!(notes(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_typo_in_a_subcommand_suggests_the_right_one() {
    let env = TestEnv::new();
    let out = env.run(["rum", "--", "true"]);
    assert_one_line_error(&out, 125, "did you mean 'run'?");
    let out = env.run(["run", "--verbos", "--", "true"]);
    assert_one_line_error(&out, 125, "did you mean '--verbose'?");
}

/// A file of the repository (completions/, man/), as committed.
fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

#[test]
fn completions_offer_no_internal_flags_or_subcommands() {
    // They exist, hidden from --help: the completions must hide them too.
    let env = TestEnv::new();
    let out = env.run(["run", "--refresh", "--stream-mode", "merged", "--", "true"]);
    assert_success(&out);
    for shell in ["memo.bash", "_memo", "memo.fish", "memo.elv", "_memo.ps1"] {
        let script = repo_file(&format!("completions/{shell}"));
        for internal in ["--refresh", "--stream-mode", "--auto", "(internal)"] {
            assert!(!script.contains(internal), "{shell} offers {internal}");
        }
        assert!(
            !script.contains("upload'")
                && !script.contains("\"upload\"")
                && !script.contains("__upload"),
            "{shell} offers `remote upload`"
        );
    }
    let bash = repo_file("completions/memo.bash");
    assert!(
        bash.contains("opts=\"-h --cache-dir --remote --help check push help\""),
        "remote's subcommands"
    );
}

/// Runs bash with the committed completion script loaded, completes `words` (the last
/// one being completed) and returns the candidates, one a line, and what bash wrote to
/// stderr. `memo` is found on PATH; `env_vars` are added to the environment.
fn complete_in_bash(env: &TestEnv, words: &[&str], env_vars: &[(&str, &str)]) -> (String, String) {
    let script = format!(
        "source '{}/completions/memo.bash'\n\
         COMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         _memo_with_keys memo \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        env!("CARGO_MANIFEST_DIR"),
        words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        words.len() - 1
    );
    let bin_dir = std::path::Path::new(MEMO).parent().unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-c", &script])
        .current_dir(env.work())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", env.root.path().join("home"));
    for (name, value) in env_vars {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    assert_success(&out);
    (stdout(&out), stderr(&out))
}

#[test]
fn bash_completes_cache_keys_for_show_and_rm() {
    let env = TestEnv::new();
    assert_success(&env.run(["run", "--", "echo", "one"]));
    assert_success(&env.run(["run", "--", "echo", "two"]));
    let keys: Vec<String> = env
        .listing()
        .iter()
        .map(|e| e["key"].as_str().unwrap()[..12].to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    let cache = env.cache().display().to_string();
    let vars = [("MEMO_DIR", cache.as_str())];

    let (offered, _) = complete_in_bash(&env, &["memo", "show", ""], &vars);
    let mut offered: Vec<&str> = offered.lines().collect();
    offered.sort();
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(offered, want);

    let (offered, _) = complete_in_bash(&env, &["memo", "rm", &keys[0][..6]], &vars);
    assert!(offered.lines().any(|l| l == keys[0]), "{offered}");
    assert!(
        offered.lines().all(|l| l.starts_with(&keys[0][..6])),
        "{offered}"
    );

    // The cache named on the line, not by the environment.
    let (offered, _) = complete_in_bash(&env, &["memo", "--cache-dir", &cache, "show", ""], &[]);
    assert_eq!(offered.lines().count(), 2, "{offered}");

    // Flags still complete, without the internal ones.
    let (offered, _) = complete_in_bash(&env, &["memo", "run", "--re"], &vars);
    assert!(offered.lines().any(|l| l == "--remote"), "{offered}");
    assert!(!offered.contains("--refresh"), "{offered}");
}

#[test]
fn key_completion_completes_nothing_quietly_when_memo_fails() {
    let env = TestEnv::new();
    let not_a_dir = env.write("file", "x").display().to_string();
    let (offered, noise) =
        complete_in_bash(&env, &["memo", "show", ""], &[("MEMO_DIR", &not_a_dir)]);
    assert_eq!((offered.trim(), noise.as_str()), ("", ""));
    let (offered, noise) = complete_in_bash(&env, &["no-such-memo", "show", ""], &[]);
    assert_eq!((offered.trim(), noise.as_str()), ("", ""));
}

#[test]
fn keys_for_completion_create_no_cache() {
    let env = TestEnv::new();
    let out = env.run(["__keys"]);
    assert_success(&out);
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    assert!(!env.cache().exists());
}

#[test]
fn man_pages_have_examples_and_exit_status_and_name_only_pages_that_ship() {
    let man = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages = 0;
    for entry in fs::read_dir(&man).unwrap() {
        let path = entry.unwrap().path();
        let page = fs::read_to_string(&path).unwrap();
        pages += 1;
        // Every `name(1)` the page mentions is a page in man/.
        for (at, _) in page.match_indices("(1)") {
            let start = page[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '\\'))
                .map_or(0, |i| i + 1);
            let name = page[start..at].replace("\\-", "-");
            assert!(
                man.join(format!("{name}.1")).exists(),
                "{} names {name}(1), which does not ship",
                path.display()
            );
        }
        assert!(
            page.contains(".SH \"EXIT STATUS\""),
            "{} has no EXIT STATUS",
            path.display()
        );
    }
    assert!(pages > 10);
    for name in ["memo.1", "memo-run.1", "memo-explain.1"] {
        let page = fs::read_to_string(man.join(name)).unwrap();
        assert!(page.contains(".SH \"EXAMPLES\""), "{name} has no EXAMPLES");
    }
    let top = fs::read_to_string(man.join("memo.1")).unwrap();
    assert!(
        top.contains("memo\\-show(1)") && top.contains("memo\\-remote(1)"),
        "{top}"
    );
}

/// Whether `shell` is installed; says so on stderr when it is not (the test then skips).
fn have_shell(shell: &str) -> bool {
    let found = std::process::Command::new(shell)
        .args(["-c", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: {shell} is not installed");
    }
    found
}

/// Two stored results and their short keys, sorted.
fn two_results(env: &TestEnv) -> Vec<String> {
    assert_success(&env.run(["run", "--", "echo", "one"]));
    assert_success(&env.run(["run", "--", "echo", "two"]));
    let mut keys: Vec<String> = env
        .listing()
        .iter()
        .map(|e| e["key"].as_str().unwrap()[..12].to_string())
        .collect();
    keys.sort();
    keys
}

fn shell_env(env: &TestEnv, cmd: &mut std::process::Command) {
    let bin_dir = std::path::Path::new(MEMO).parent().unwrap();
    cmd.current_dir(env.work())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", env.cache());
}

#[test]
fn fish_completes_cache_keys_for_show_and_rm() {
    if !have_shell("fish") {
        return;
    }
    let env = TestEnv::new();
    let keys = two_results(&env);
    let complete = |line: &str| {
        let mut cmd = std::process::Command::new("fish");
        cmd.args(["--no-config", "-c"]).arg(format!(
            "source '{}/completions/memo.fish'; complete -C '{line}'",
            env!("CARGO_MANIFEST_DIR")
        ));
        shell_env(&env, &mut cmd);
        let out = cmd.output().unwrap();
        assert_success(&out);
        let mut offered: Vec<String> = stdout(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        offered.sort();
        offered
    };
    assert_eq!(complete("memo show "), keys);
    assert_eq!(
        complete(&format!("memo rm {}", &keys[1][..6])),
        [keys[1].clone()]
    );
    let flags = complete("memo run --re");
    assert!(flags.iter().any(|f| f == "--remote"), "{flags:?}");
    assert!(!flags.iter().any(|f| f == "--refresh"), "{flags:?}");
}

#[test]
fn zsh_completes_cache_keys_for_show_and_rm() {
    if !have_shell("zsh") {
        return;
    }
    let env = TestEnv::new();
    let keys = two_results(&env);
    // An interactive zsh on a pseudo-terminal (zpty) is given the line and a Tab; its
    // compadd is wrapped to write down the candidates it is offered.
    let complete = |line: &str| {
        let out_file = env.root.path().join(format!("zsh-{}.out", line.len()));
        let script = format!(
            r#"zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT='> '"
zpty -w z "fpath=({dir}/completions \$fpath); autoload -U compinit && compinit -u -D"
zpty -w z 'compadd () {{ local -a __hits; builtin compadd -O __hits "$@"; print -l -- ${{^__hits}} >> {out} }}'
zpty -n -w z '{line}'$'\t'
for i in {{1..100}}; do [[ -s {out} ]] && break; sleep 0.05; done
sleep 0.2
zpty -d z
"#,
            dir = env!("CARGO_MANIFEST_DIR"),
            out = out_file.display(),
        );
        let mut cmd = std::process::Command::new("zsh");
        cmd.args(["-f", "-c", &script]);
        shell_env(&env, &mut cmd);
        assert_success(&cmd.output().unwrap());
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        let mut offered: Vec<String> = text.lines().map(String::from).collect();
        offered.sort();
        offered.dedup();
        offered
    };
    assert_eq!(complete("memo show "), keys);
    assert_eq!(
        complete(&format!("memo rm {}", &keys[0][..6])),
        [keys[0].clone()]
    );
}
