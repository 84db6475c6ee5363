//! Download + verify + stage of a 4 MiB agent binary (target: ≤ 2 s on the dev machine).
//!
//! The binary is 4 MiB of this very executable (real machine code, so zstd compresses it as
//! it would a release), compressed with `zstd -19` and signed like a release, served over
//! HTTP from a thread on 127.0.0.1, and staged through `update::stage::stage` — the same
//! call `doorbell-agent update apply URL` makes: download, signature, version, sizes,
//! payload sha256, decompression, binary sha256 and ELF check, durable staging.
//!
//!     cargo bench --bench update

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use doorbell_agent::update::stage::{self, Context, Source};
use doorbell_artifact::{self as artifact, SecretKey, TARGET};
use doorbell_slotctl::ctl::StagedOptions;
use doorbell_slotctl::{Layout, Slot, SlotInfo, State};

const SIZE: usize = 4 * 1024 * 1024;

fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/agent.dbu")
}

fn zstd19(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd").args(["-19", "-q", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("zstd tool");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    w.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "zstd failed");
    out
}

fn bench(c: &mut Criterion) {
    let mut binary = std::fs::read("/proc/self/exe").unwrap();
    while binary.len() < SIZE {
        binary.extend_from_within(..binary.len().min(SIZE - binary.len()));
    }
    binary.truncate(SIZE);
    let key = SecretKey::from_seed([1; 32]);
    let (_, artifact) = artifact::build(&key, "0.2.0", TARGET, &binary, &zstd19(&binary));
    let url = serve(artifact.clone());

    let dir = tempfile::tempdir().unwrap();
    let layout = Layout { root: dir.path().join("opt"), state_dir: dir.path().join("slotctl") };
    std::fs::create_dir_all(&layout.state_dir).unwrap();
    let mut state = State::new(Slot::A);
    state.set_slot(Slot::A, Some(SlotInfo { version: "0.1.0".into(), sha256: "00".into(), size: 1, installed_ms: 0 }));
    state.save(&layout.state_file()).unwrap();
    let ctx = Context {
        data_dir: dir.path().join("data"),
        layout,
        key: Some(key.public()),
        max_size: 32 << 20,
        download_timeout: Duration::from_secs(60),
        ca_file: None,
    };
    let staged = ctx.data_dir.join("update/staged");
    println!("artifact: {} bytes for a {} byte binary", artifact.len(), binary.len());

    let mut group = c.benchmark_group("update");
    group.sample_size(10);
    group.bench_function("download+verify+stage 4 MiB over http", |b| {
        b.iter(|| {
            stage::stage(&ctx, &Source::Url(url.clone()), &StagedOptions::default(), &mut |_| {}).expect("stage");
            std::fs::remove_dir_all(&staged).unwrap();
        })
    });
    group.finish();
    assert!(!Path::new(&staged).exists());
}

criterion_group!(benches, bench);
criterion_main!(benches);
