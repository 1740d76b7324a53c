//! The demo `hearth up` runs against its own server, through the REST API
//! as any client would: create a sandbox, run Python in it, write a file
//! and read it back, destroy it; then, once the template snapshot exists,
//! time a second sandbox restored from it. The sandbox is destroyed on
//! every path, failures included.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::progress::Spinner;
use crate::api::Api;

const PYTHON: &str = "python3 -c 'import platform; print(\"hello from Python\", \
                      platform.python_version(), \"in\", platform.node())' 2>/dev/null \
                      || echo \"hello from busybox on $(uname -r) in $(hostname)\"";

pub async fn run(
    api: &Api,
    template: &str,
    extra: Option<&str>,
    warm_boot: bool,
    prebuilt: bool,
) -> anyhow::Result<()> {
    if prebuilt {
        // The server writes it at start: the first sandbox restores it.
        let step = Spinner::start(format!("writing the `{template}` template snapshot"));
        step.message("once per template version, at server start; every sandbox restores it");
        wait_warm(api, template, Duration::from_secs(300)).await?;
        step.done();
    }
    let step = Spinner::start(format!("creating a `{template}` sandbox"));
    let (id, boot) = create(api, template).await?;
    let took = step.done();
    println!(
        "sandbox {id} is running: {} ms ({} boot)",
        took.as_millis(),
        boot
    );
    let result = exercise(api, &id, extra).await;
    destroy(api, &id).await?;
    result?;

    if warm_boot && boot != "snapshot" {
        let step = Spinner::start(format!("waiting for the `{template}` template snapshot"));
        step.message("written once in the background; every later sandbox restores it");
        wait_warm(api, template, Duration::from_secs(180)).await?;
        step.done();
        let started = Instant::now();
        let (id, boot) = create(api, template).await?;
        let to_running = started.elapsed();
        let r = exec(api, &id, "echo ready").await;
        let to_exec = started.elapsed();
        destroy(api, &id).await?;
        r?;
        println!(
            "a second sandbox ({boot} boot): running in {} ms, first command answered at {} ms",
            to_running.as_millis(),
            to_exec.as_millis()
        );
    }
    println!("demo done: sandboxes destroyed. Hearth works on this machine.");
    Ok(())
}

/// Creates a sandbox of `template`: its id and boot path.
async fn create(api: &Api, template: &str) -> anyhow::Result<(String, String)> {
    let v = api
        .post("/sandboxes", json!({ "template_id": template }))
        .await
        .context("create the demo sandbox")?;
    let d = &v["data"];
    let id = d["id"].as_str().context("the create answer has no id")?;
    if d["state"] != "running" {
        destroy(api, id).await?;
        bail!("the demo sandbox is {} instead of running", d["state"]);
    }
    Ok((
        id.to_string(),
        d["boot_path"].as_str().unwrap_or("cold").to_string(),
    ))
}

async fn exercise(api: &Api, id: &str, extra: Option<&str>) -> anyhow::Result<()> {
    let r = exec(api, id, PYTHON).await?;
    print!(
        "exec ({} ms): {}",
        r["duration_ms"],
        r["stdout"].as_str().unwrap_or("")
    );

    let path = "/workspace/hello.txt";
    let text = format!("written by hearth up into {id}\n");
    api.send(
        api.http
            .put(api.url(&format!("/sandboxes/{id}/fs/raw")))
            .query(&[("path", path)])
            .body(text.clone()),
    )
    .await
    .context("write a file into the sandbox")?;
    let back = api
        .response(
            api.http
                .get(api.url(&format!("/sandboxes/{id}/fs/download")))
                .query(&[("path", path)]),
        )
        .await
        .context("read the file back")?
        .text()
        .await?;
    if back != text {
        bail!("{path} read back {back:?}, wrote {text:?}");
    }
    print!("file {path}: {back}");

    if let Some(command) = extra {
        let r = run_command(api, id, command).await?;
        println!("$ {command}  (exit {})", r["exit_code"]);
        print!(
            "{}{}",
            r["stdout"].as_str().unwrap_or(""),
            r["stderr"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `command`; its result whatever its exit code.
async fn run_command(api: &Api, id: &str, command: &str) -> anyhow::Result<Value> {
    let v = api
        .post(
            &format!("/sandboxes/{id}/exec"),
            json!({ "command": command, "timeout": 120 }),
        )
        .await
        .with_context(|| format!("run `{command}` in the demo sandbox"))?;
    Ok(v["data"].clone())
}

/// Runs `command`; its result, or an error when it exits non-zero.
async fn exec(api: &Api, id: &str, command: &str) -> anyhow::Result<Value> {
    let r = run_command(api, id, command).await?;
    if r["exit_code"] != 0 {
        bail!(
            "`{command}` exited {} in the demo sandbox: {}",
            r["exit_code"],
            r["stderr"].as_str().unwrap_or("").trim()
        );
    }
    Ok(r)
}

async fn destroy(api: &Api, id: &str) -> anyhow::Result<()> {
    api.delete(&format!("/sandboxes/{id}"))
        .await
        .with_context(|| format!("destroy the demo sandbox {id}"))?;
    Ok(())
}

/// Waits until the template has a template snapshot of some shape.
async fn wait_warm(api: &Api, template: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let v = api.get(&format!("/sandbox-templates/{template}")).await?;
        let warm = v["data"]["warm_shapes"].as_array().map_or(0, Vec::len);
        if warm > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the `{template}` template snapshot was not written within {} s (see the server log)",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
