//! 256 MiB file written and read through the agent vs `cp` of the same file
//! on the same filesystem, in one run. Target: throughput ratio >= 0.5.

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use hearth_test_support::AgentProcess;

/// Flushes dirty pages so one step's writeback does not slow the next.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Reads `path` on a blocking thread in 1 MiB chunks, as a host that streams
/// a file to a guest would.
fn read_chunks(
    path: std::path::PathBuf,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return drop(tx.blocking_send(Err(e))),
        };
        loop {
            let mut buf = bytes::BytesMut::zeroed(1 << 20);
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return;
                    }
                }
                Err(e) => return drop(tx.blocking_send(Err(e))),
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

const SIZE: usize = 256 * 1024 * 1024;
const ROUNDS: usize = 7;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::tune_allocator();
    let agent = AgentProcess::start(&common::agent_binary()?, &[]).await?;
    let client = agent.client();
    let src = agent.path("src.bin");
    {
        // Incompressible, deterministic content.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..SIZE / block.len() {
            for chunk in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let mut cp = Vec::new();
    let mut write = Vec::new();
    let mut read = Vec::new();
    for round in 0..ROUNDS {
        let dst = agent.path(&format!("cp-{round}.bin"));
        settle();
        let t = Instant::now();
        anyhow::ensure!(std::process::Command::new("cp")
            .arg(&src)
            .arg(&dst)
            .status()?
            .success());
        cp.push(t.elapsed());
        std::fs::remove_file(&dst)?;

        let dst = agent.path(&format!("up-{round}.bin"));
        let dst_s = dst.to_str().unwrap_or_default().to_string();
        settle();
        let t = Instant::now();
        let w = client
            .write_file_raw_stream(&dst_s, None, read_chunks(src.clone()))
            .await?;
        write.push(t.elapsed());
        anyhow::ensure!(
            w.size_bytes as usize == SIZE,
            "uploaded {} bytes",
            w.size_bytes
        );

        let out = agent.path(&format!("down-{round}.bin"));
        settle();
        let t = Instant::now();
        let mut stream = client.read_file(&dst_s).await?;
        // The host writes on a blocking thread, as the server would.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let writer = tokio::task::spawn_blocking({
            let out = out.clone();
            move || -> std::io::Result<()> {
                let mut f = std::fs::File::create(out)?;
                while let Some(chunk) = rx.blocking_recv() {
                    f.write_all(&chunk)?;
                }
                Ok(())
            }
        });
        let mut n = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.len();
            tx.send(chunk).await?;
        }
        drop(tx);
        writer.await??;
        read.push(t.elapsed());
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let (c, w, r) = (cp[round], write[round], read[round]);
            eprintln!("  round {round}: cp {c:?} write {w:?} read {r:?}");
        }
        anyhow::ensure!(n == SIZE, "downloaded {n} bytes");
        std::fs::remove_file(&dst)?;
        std::fs::remove_file(&out)?;
    }
    let mib_s = |d: Duration| SIZE as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
    let cp_t = mib_s(common::quantile(&mut cp, 0.5));
    let w_t = mib_s(common::quantile(&mut write, 0.5));
    let r_t = mib_s(common::quantile(&mut read, 0.5));
    println!("256 MiB file, median of {ROUNDS} rounds");
    println!("  cp                {cp_t:8.0} MiB/s");
    println!(
        "  write via agent   {w_t:8.0} MiB/s   ratio {:.2} (target >= 0.5)",
        w_t / cp_t
    );
    println!(
        "  read via agent    {r_t:8.0} MiB/s   ratio {:.2} (target >= 0.5)",
        r_t / cp_t
    );
    Ok(())
}
