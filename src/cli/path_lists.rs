//! `-i` and `-o` with several paths: a pass over the raw arguments of `memo run` and
//! `memo explain`, before clap sees them.
//!
//! The rule (also in `memo run --help`): when a `--` follows the subcommand, every word
//! before it is memo's. `-i` and `-o` take every path up to the next option or `--`
//! (`memo run -i $^ -o $@ -- cc ...`), and a word that belongs to no option is an error
//! that names it. Without `--`, each `-i` and `-o` takes one path and the first word that
//! is not an option starts the command, so `memo run -i a ls -l` runs `ls -l`.
//!
//! The pass only rewrites `-i a b` as `--input a --input b`; it validates nothing else. A
//! word it does not know as an option leaves the arguments untouched, for clap to report.
//! What takes a value is read from the clap definition, so the two cannot disagree.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use clap::{Arg, Command};

use crate::exit::Fatal;

/// The options that take every path up to the next option, by clap id.
const PATH_LISTS: [&str; 2] = ["inputs", "outputs"];

/// The subcommands whose arguments end with a command.
const WITH_COMMAND: [&str; 2] = ["run", "explain"];

/// `argv` (program name first) with each path list before `--` spread into one option
/// per path; unchanged when there is no such list or no `--`.
pub fn spread(cli: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, Fatal> {
    let Some((at, sub)) = find_subcommand(cli, &argv) else {
        return Ok(argv);
    };
    if !WITH_COMMAND.contains(&sub.get_name()) {
        return Ok(argv);
    }
    let rest = &argv[at + 1..];
    let Some(double_dash) = find_double_dash(sub, rest) else {
        return Ok(argv);
    };
    let mut spread: Vec<OsString> = argv[..=at].to_vec();
    let mut list: Option<&Arg> = None;
    let mut i = 0;
    while i < double_dash {
        let word = &rest[i];
        match classify(sub, word.as_bytes()) {
            Word::Unknown => return Ok(argv),
            Word::DoubleDash => unreachable!("the first `--` ends the loop"),
            Word::Option { arg, needs_value } => {
                spread.push(word.clone());
                if needs_value && takes_as_value(arg, rest.get(i + 1)) {
                    spread.push(rest[i + 1].clone());
                    i += 1;
                }
                list = PATH_LISTS
                    .contains(&arg.get_id().as_str())
                    .then_some(arg);
            }
            Word::Plain => match list {
                Some(arg) => {
                    let long = arg.get_long().expect("path lists have a long name");
                    spread.push(format!("--{long}").into());
                    spread.push(word.clone());
                }
                None => {
                    return Err(Fatal::failure(format!(
                        "memo: '{}' comes before '--' but belongs to no option; only -i and -o take several paths, so put the command after '--': memo {} [OPTIONS] -- CMD ARGS...",
                        word.to_string_lossy(),
                        sub.get_name()
                    )))
                }
            },
        }
        i += 1;
    }
    spread.extend_from_slice(&rest[double_dash..]);
    Ok(spread)
}

/// The subcommand's position in `argv` and its definition, past the global options.
fn find_subcommand<'a>(cli: &'a Command, argv: &[OsString]) -> Option<(usize, &'a Command)> {
    let mut i = 1;
    while i < argv.len() {
        match classify(cli, argv[i].as_bytes()) {
            Word::Plain => {
                let name = argv[i].to_str()?;
                return cli.find_subcommand(name).map(|sub| (i, sub));
            }
            Word::Option { arg, needs_value } => {
                if needs_value && takes_as_value(arg, argv.get(i + 1)) {
                    i += 1;
                }
            }
            Word::DoubleDash | Word::Unknown => return None,
        }
        i += 1;
    }
    None
}

/// Where the first `--` that is no option's value stands in `rest`.
fn find_double_dash(sub: &Command, rest: &[OsString]) -> Option<usize> {
    let mut i = 0;
    while i < rest.len() {
        match classify(sub, rest[i].as_bytes()) {
            Word::DoubleDash => return Some(i),
            Word::Option { arg, needs_value } => {
                if needs_value && takes_as_value(arg, rest.get(i + 1)) {
                    i += 1;
                }
            }
            Word::Plain | Word::Unknown => {}
        }
        i += 1;
    }
    None
}

enum Word<'a> {
    DoubleDash,
    /// A known option; `needs_value` when its value is the next word.
    Option {
        arg: &'a Arg,
        needs_value: bool,
    },
    /// Looks like an option but is none of memo's.
    Unknown,
    Plain,
}

fn classify<'a>(cmd: &'a Command, word: &[u8]) -> Word<'a> {
    if word == b"--" {
        return Word::DoubleDash;
    }
    if let Some(long) = word.strip_prefix(b"--") {
        let (name, attached) = match long.iter().position(|&b| b == b'=') {
            Some(eq) => (&long[..eq], true),
            None => (long, false),
        };
        let found = cmd
            .get_arguments()
            .find(|a| a.get_long().is_some_and(|l| l.as_bytes() == name));
        return match found {
            Some(arg) => Word::Option {
                arg,
                needs_value: takes_value(arg) && !attached,
            },
            None => Word::Unknown,
        };
    }
    if word.len() > 1 && word[0] == b'-' {
        // A cluster of short flags, `-vi`: the first that takes a value takes the rest
        // of the word, or the next word when nothing is left.
        let Ok(cluster) = std::str::from_utf8(&word[1..]) else {
            return Word::Unknown;
        };
        let mut last = None;
        for (at, c) in cluster.char_indices() {
            let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == Some(c)) else {
                return Word::Unknown;
            };
            if takes_value(arg) {
                return Word::Option {
                    arg,
                    needs_value: at + c.len_utf8() == cluster.len(),
                };
            }
            last = Some(arg);
        }
        return match last {
            Some(arg) => Word::Option {
                arg,
                needs_value: false,
            },
            None => Word::Unknown,
        };
    }
    Word::Plain
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// Whether clap would take `next` as the value of `arg`, as it does a word that does not
/// look like an option (or any word, for an option that allows leading hyphens).
fn takes_as_value(arg: &Arg, next: Option<&OsString>) -> bool {
    match next.map(|w| w.as_bytes()) {
        None | Some(b"--") => false,
        Some(word) => arg.is_allow_hyphen_values_set() || word == b"-" || !word.starts_with(b"-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn spread_words(words: &[&str]) -> Result<Vec<String>, String> {
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let argv = std::iter::once("memo")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        spread(&cli, argv)
            .map(|v| {
                v.into_iter()
                    .skip(1)
                    .map(|w| w.into_string().unwrap())
                    .collect()
            })
            .map_err(|f| f.message)
    }

    #[test]
    fn paths_before_double_dash_each_get_their_option() {
        assert_eq!(
            spread_words(&["run", "-i", "a.c", "b.h", "-o", "x", "y", "--", "cc", "b.h"]).unwrap(),
            ["run", "-i", "a.c", "--input", "b.h", "-o", "x", "--output", "y", "--", "cc", "b.h"]
        );
        assert_eq!(
            spread_words(&["explain", "--input=a", "b", "-vi", "c", "d", "--", "cc"]).unwrap(),
            [
                "explain",
                "--input=a",
                "--input",
                "b",
                "-vi",
                "c",
                "--input",
                "d",
                "--",
                "cc"
            ]
        );
    }

    #[test]
    fn without_double_dash_nothing_changes() {
        for words in [
            &["run", "-i", "a", "ls", "-l"][..],
            &["run", "-v", "ls", "-l"],
            &["stats", "--json"],
            &["--cache-dir", "run", "ls"],
        ] {
            assert_eq!(spread_words(words).unwrap(), words);
        }
    }

    #[test]
    fn option_values_are_not_paths_and_a_stray_word_is_named() {
        assert_eq!(
            spread_words(&[
                "--cache-dir",
                "d",
                "run",
                "--salt",
                "s",
                "-i",
                "a",
                "--",
                "x"
            ])
            .unwrap(),
            [
                "--cache-dir",
                "d",
                "run",
                "--salt",
                "s",
                "-i",
                "a",
                "--",
                "x"
            ]
        );
        let err = spread_words(&["run", "--salt", "s", "stray", "-i", "a", "--", "x"]).unwrap_err();
        assert!(err.contains("'stray'"), "{err}");
        let err = spread_words(&["run", "-v", "git", "diff", "--", "x"]).unwrap_err();
        assert!(err.contains("'git'"), "{err}");
    }

    #[test]
    fn an_unknown_option_is_left_to_clap() {
        let words = ["run", "--bogus", "a", "b", "--", "x"];
        assert_eq!(spread_words(&words).unwrap(), words);
    }
}
