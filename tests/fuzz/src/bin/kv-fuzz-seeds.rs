//! Writes every target's seed inputs into `<dir>/<target>/`, the starting corpus of a
//! libFuzzer campaign (`make fuzz`), since the seeds are built in code from real
//! encodings rather than checked in as bytes that would go stale.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: kv-fuzz-seeds <corpus dir>");
        return ExitCode::from(2);
    };
    for target in kv_fuzz::TARGETS {
        let dir = PathBuf::from(&dir).join(target.name);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("kv-fuzz-seeds: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for (i, seed) in (target.seeds)().iter().enumerate() {
            let file = dir.join(format!("seed-{i}"));
            if let Err(e) = std::fs::write(&file, seed) {
                eprintln!("kv-fuzz-seeds: cannot write {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
