//! `linecap::profile`: the hardware-profile TOML parser and its validation,
//! over arbitrary text (inputs that are not UTF-8 are skipped; a dictionary
//! of the profile's keys and tables helps the fuzzer build TOML).
//!
//! Nothing may panic, and a profile that parses and validates must:
//!
//! * validate again, cloned, and parse again to the same value;
//! * parse to the same value once its TOML is re-serialised (the profile
//!   depends on the values, not on how the TOML spells them);
//! * give sane derived values: a power-of-two ring of 2 to 65536 slots,
//!   memory sizes without overflow, a `--source` for its backend, an output
//!   directory for every queue and every queue on one directory;
//! * apply to `linecap capture --profile P` without error, and the capture
//!   configuration that results must validate too, for the backends the
//!   capture command has (afxdp, file): a profile that validates must not
//!   be refused later by the capture, except for worker cores this machine
//!   lacks.
#![no_main]

use clap::{CommandFactory, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use linecap::cli::{Cli, Command};
use linecap::profile::{Backend, Profile};
use linecap::{config, values};

thread_local! {
    /// `linecap capture --profile P` parsed once (clap's parser is slow to build).
    static MATCHES: clap::ArgMatches = Cli::command()
        .try_get_matches_from(["linecap", "capture", "--profile", "P"])
        .expect("capture --profile P parses");
}

fn check(p: &Profile, text: &str) {
    p.validate().expect("a parsed profile validates again");
    p.clone().validate().expect("a cloned profile validates");
    let again = Profile::parse(text).expect("the same text parses again");
    assert_eq!(
        format!("{p:?}"),
        format!("{again:?}"),
        "parsing is deterministic"
    );

    // Re-serialised TOML: the same profile.
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        let text2 = table.to_string();
        match Profile::parse(&text2) {
            Ok(p2) => assert_eq!(
                format!("{p:?}"),
                format!("{p2:?}"),
                "re-serialised: {text2}"
            ),
            Err(e) => panic!("the re-serialised profile fails: {e:#}\n{text2}"),
        }
    }

    // Derived values.
    let slots = p.ring_slots();
    assert!(
        slots.is_power_of_two() && (2..=1 << 16).contains(&slots),
        "ring_slots() = {slots}"
    );
    let ring = p.ring_memory_bytes();
    assert!(p.locked_memory_bytes() >= ring);
    let spec = p
        .source_spec()
        .expect("a validated profile names its source");
    let queues = p.nic.queues;
    for q in 0..queues {
        assert!(p.writer.dirs.contains(&p.queue_dir(q).to_path_buf()));
    }
    let on_dirs: u32 = (0..p.writer.dirs.len()).map(|i| p.queues_on_dir(i)).sum();
    assert_eq!(on_dirs, queues, "every queue on one directory");

    // Applied to a capture command line.
    MATCHES.with(|m| {
        let Command::Capture(mut args) = Cli::from_arg_matches(m).expect("args").command else {
            unreachable!("a capture command line")
        };
        let (_, sub) = m.subcommand().expect("the capture subcommand");
        p.apply_to(&mut args, sub)
            .expect("a validated profile applies");
        assert_eq!(args.profile_sources, [spec.clone()]);
        // Host checks (cores, user) aside, nothing a validated profile
        // gives may be refused by the capture's own validation.
        if p.nic.backend != Backend::Dpdk
            && let Err(e) = config::validate::effective_config(&args)
        {
            panic!("a validated profile gives a capture configuration that fails: {e:#}");
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The value parsers the profile uses, on the raw text too.
    if text.len() <= 256 {
        let _ = values::parse_size(text);
        let _ = values::parse_file_size(text);
        let _ = values::parse_list(text);
        if let Ok(key) = values::parse_rss_key(text) {
            assert_eq!(key.len(), 40);
            let _ = values::rss_key_is_symmetric(&key);
        }
    }
    if let Ok(p) = Profile::parse(text) {
        check(&p, text);
    }
});
