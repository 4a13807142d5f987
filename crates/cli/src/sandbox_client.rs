//! The sandbox client commands: `cordon exec` (streams the command's output and exits
//! with its code), `cordon files put|get|ls|rm` and `cordon process list|kill`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use cordon_wire::{
    ExecRequest, ExecResponse, ExecStreamEvent, FileBody, FileList, ProcessBody, ProcessList,
};
use reqwest::Method;

use crate::client::{Client, ClientArgs, Failure, Outcome, finish, http_failure, table};
use crate::exit;

const NDJSON: &str = "application/x-ndjson";

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The server's base URL.
    #[arg(long, env = "CORDON_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// The API key's bearer token.
    #[arg(long, env = "CORDON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the whole result as JSON when the command ends instead of streaming.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the server to connect and answer (a command in the foreground
    /// may run longer: its --timeout-ms plus 30 s, or an hour and 30 s without one).
    #[arg(long, env = "CORDON_TIMEOUT", default_value_t = 30)]
    timeout: u64,
    /// An environment variable for the command, KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory: absolute, or relative to /workspace.
    #[arg(long)]
    cwd: Option<String>,
    /// Kill the command after this many milliseconds (the workload class caps it).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Send this program's stdin to the command (UTF-8 text).
    #[arg(long)]
    stdin: bool,
    /// Start the command in the background and print its process.
    #[arg(long)]
    background: bool,
    /// Sent as `Idempotency-Key`: a retried exec returns the recorded result and runs
    /// nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The session.
    session: String,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload LOCAL (`-` for stdin) to PATH in the session's /workspace.
    Put {
        session: String,
        local: String,
        path: String,
        /// Permission bits in octal, e.g. 755.
        #[arg(long)]
        mode: Option<String>,
    },
    /// Download PATH to LOCAL (default: stdout).
    Get {
        session: String,
        path: String,
        local: Option<String>,
    },
    /// List a directory of /workspace (default: /workspace itself).
    Ls {
        session: String,
        dir: Option<String>,
    },
    /// Delete a file, symlink or directory.
    Rm {
        session: String,
        path: String,
        /// Delete a non-empty directory with everything in it.
        #[arg(long, short = 'r')]
        recursive: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProcessCommand {
    /// Processes started in the session's sandbox (running ones and recent exits).
    List { session: String },
    /// Kill a process and its process group.
    Kill { session: String, pid: i32 },
}

/// `a/b c/d` as `a/b%20c/d`: each segment percent-encoded, the slashes kept. A path
/// with `.` or `..` segments goes as one segment with its slashes encoded too, because
/// URL parsers resolve dot segments (even encoded ones) before sending: the server must
/// see, and refuse, what was asked.
fn encode_path(path: &str) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        let encoded = encode(path);
        return if encoded == "." || encoded == ".." {
            format!("{encoded}%2F")
        } else {
            encoded
        };
    }
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// The exit code to leave with for a command's exit code (0-255 pass through).
fn exit_code_of(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}

/// Splits a growing buffer into complete lines, keeping the unfinished tail. Blank
/// lines are dropped, and a `\r` before the `\n` is not part of its line.
fn take_lines(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
        let mut line: Vec<u8> = buffer.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

fn parse_event(line: &[u8]) -> Outcome<ExecStreamEvent> {
    serde_json::from_slice(line).map_err(|error| Failure {
        code: exit::INTERNAL,
        message: format!("unexpected stream event: {error}"),
    })
}

fn parse_exec_response(body: &[u8]) -> Outcome<ExecResponse> {
    serde_json::from_slice(body).map_err(|error| Failure {
        code: exit::INTERNAL,
        message: format!("unexpected answer from the server: {error}"),
    })
}

fn no_exit_failure() -> Failure {
    Failure {
        code: exit::INTERNAL,
        message: "the server ended the stream without the command's exit".to_owned(),
    }
}

/// A whole streamed exec as the non-streamed answer would have given it. The server
/// replays a recorded stream whole when an `Idempotency-Key` is retried with `--json`.
fn collect_stream(body: &[u8]) -> Outcome<ExecResponse> {
    let mut buffer = body.to_vec();
    buffer.push(b'\n');
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for line in take_lines(&mut buffer) {
        match parse_event(&line)? {
            ExecStreamEvent::Stdout { data } => stdout.push_str(&data),
            ExecStreamEvent::Stderr { data } => stderr.push_str(&data),
            ExecStreamEvent::Exit {
                exit_code,
                signal,
                duration_ms,
                reason_code,
                message,
            } => {
                return Ok(ExecResponse {
                    exit_code,
                    signal,
                    stdout,
                    stderr,
                    truncated: false,
                    duration_ms,
                    reason_code,
                    message,
                });
            }
        }
    }
    Err(no_exit_failure())
}

/// `cordon: EXEC_TIMEOUT: the command ran past ...` on stderr, when a reason ended it.
fn report_reason(reason_code: Option<String>, message: Option<String>) {
    if let Some(reason) = reason_code {
        eprintln!("cordon: {reason}: {}", message.unwrap_or_default());
    }
}

fn is_ndjson(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(NDJSON))
}

fn unreachable_failure(base: &str, error: &reqwest::Error) -> Failure {
    Failure {
        code: exit::UNREACHABLE,
        message: format!("cannot reach {base}: {error}"),
    }
}

fn broken_failure(base: &str, error: &reqwest::Error) -> Failure {
    Failure {
        code: exit::UNREACHABLE,
        message: format!("the connection to {base} broke: {error}"),
    }
}

fn authorized(client: &Client, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &client.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

pub async fn run_exec(args: ExecArgs) -> ExitCode {
    match exec(args).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            exit::code(failure.code)
        }
    }
}

async fn exec(args: ExecArgs) -> Outcome<u8> {
    let stdin = if args.stdin {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|error| Failure {
                code: exit::USAGE,
                message: format!("cannot read stdin: {error}"),
            })?;
        Some(String::from_utf8(bytes).map_err(|_| Failure {
            code: exit::USAGE,
            message: "--stdin takes UTF-8 text".to_owned(),
        })?)
    } else {
        None
    };
    let request = ExecRequest {
        argv: args.argv.clone(),
        env: args.env.iter().cloned().collect(),
        cwd: args.cwd.clone(),
        stdin,
        timeout_ms: args.timeout_ms,
        background: args.background,
    };
    let client = Client::build(&args.url, args.token.clone(), args.json, args.timeout)?;
    let path = format!("/v1/sessions/{}/exec", encode_path(&args.session));
    if args.background {
        let value = client
            .call(
                Method::POST,
                &path,
                &[],
                Some(&request),
                args.idempotency_key.as_deref(),
            )
            .await?;
        client.show(value, |process: ProcessBody| {
            table(
                &["PID", "STATE", "LOG"],
                vec![vec![
                    process.pid.to_string(),
                    process.state,
                    process.log_path.unwrap_or_default(),
                ]],
            )
        })?;
        return Ok(exit::OK);
    }
    // A command in the foreground may run for its whole timeout: wait that long plus a
    // margin. Without --timeout-ms its class decides; an hour is the default cap.
    let wait = args
        .timeout
        .max(args.timeout_ms.map_or(3600, |ms| ms.div_ceil(1000)) + 30);
    let mut builder = authorized(&client, client.http.post(format!("{}{path}", client.base)))
        .timeout(Duration::from_secs(wait))
        .json(&request);
    if let Some(key) = &args.idempotency_key {
        builder = builder.header("idempotency-key", key);
    }
    if args.json {
        let response = send_checked(&client, builder).await?;
        let streamed = is_ndjson(&response);
        let body = response
            .bytes()
            .await
            .map_err(|error| broken_failure(&client.base, &error))?;
        let (exit_code, value) = if streamed {
            let result = collect_stream(&body)?;
            (result.exit_code, serde_json::to_value(&result))
        } else {
            let result = parse_exec_response(&body)?;
            (result.exit_code, serde_json::from_slice(&body))
        };
        let value: serde_json::Value = value.map_err(|error| Failure {
            code: exit::INTERNAL,
            message: format!("the server sent invalid JSON: {error}"),
        })?;
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(exit_code_of(exit_code));
    }
    let mut response = send_checked(&client, builder.header("accept", NDJSON)).await?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    if !is_ndjson(&response) {
        // The recorded answer of an exec first run with --json, replayed for its
        // Idempotency-Key.
        let body = response
            .bytes()
            .await
            .map_err(|error| broken_failure(&client.base, &error))?;
        let result = parse_exec_response(&body)?;
        let _ = stdout.write_all(result.stdout.as_bytes());
        let _ = stdout.flush();
        let _ = stderr.write_all(result.stderr.as_bytes());
        report_reason(result.reason_code, result.message);
        return Ok(exit_code_of(result.exit_code));
    }
    let mut buffer = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|error| broken_failure(&client.base, &error))?;
        let ended = chunk.is_none();
        match chunk {
            Some(chunk) => buffer.extend_from_slice(&chunk),
            // A last line without its newline still counts.
            None => buffer.push(b'\n'),
        }
        for line in take_lines(&mut buffer) {
            match parse_event(&line)? {
                ExecStreamEvent::Stdout { data } => {
                    let _ = stdout.write_all(data.as_bytes());
                    let _ = stdout.flush();
                }
                ExecStreamEvent::Stderr { data } => {
                    let _ = stderr.write_all(data.as_bytes());
                    let _ = stderr.flush();
                }
                ExecStreamEvent::Exit {
                    exit_code,
                    reason_code,
                    message,
                    ..
                } => {
                    report_reason(reason_code, message);
                    return Ok(exit_code_of(exit_code));
                }
            }
        }
        if ended {
            return Err(no_exit_failure());
        }
    }
}

pub async fn run_files(args: ClientArgs<FilesCommand>) -> ExitCode {
    finish(files(args).await)
}

async fn files(args: ClientArgs<FilesCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command() {
        FilesCommand::Put {
            session,
            local,
            path,
            mode,
        } => {
            let bytes = if local == "-" {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
            } else {
                std::fs::read(local)
            }
            .map_err(|error| Failure {
                code: exit::USAGE,
                message: format!("cannot read {local}: {error}"),
            })?;
            let url = file_url(&client, session, path);
            let mut request = authorized(&client, client.http.put(url))
                .header("content-type", "application/octet-stream")
                .body(bytes);
            if let Some(mode) = mode {
                request = request.query(&[("mode", mode)]);
            }
            let body = send_raw(&client, request).await?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|error| Failure {
                    code: exit::INTERNAL,
                    message: format!("the server sent invalid JSON: {error}"),
                })?;
            client.show(value, |file: FileBody| file_rows(vec![file]))
        }
        FilesCommand::Get {
            session,
            path,
            local,
        } => {
            let url = file_url(&client, session, path);
            let bytes = send_raw(&client, authorized(&client, client.http.get(url))).await?;
            let written = match local {
                Some(local) => std::fs::write(local, &bytes),
                None => std::io::stdout().write_all(&bytes),
            };
            written.map_err(|error| Failure {
                code: exit::INTERNAL,
                message: format!("cannot write the file: {error}"),
            })
        }
        FilesCommand::Ls { session, dir } => {
            let query: Vec<(&str, String)> = dir.iter().map(|d| ("dir", d.clone())).collect();
            let path = format!("/v1/sessions/{}/files", encode_path(session));
            let value = client
                .call(Method::GET, &path, &query, None::<&()>, None)
                .await?;
            client.show(value, |list: FileList| file_rows(list.items))
        }
        FilesCommand::Rm {
            session,
            path,
            recursive,
        } => {
            let url = file_url(&client, session, path);
            let mut request = authorized(&client, client.http.delete(url));
            if *recursive {
                request = request.query(&[("recursive", "true")]);
            }
            send_raw(&client, request).await.map(|_| ())
        }
    }
}

/// Sends a request; a non-2xx answer becomes the failure its error body describes.
async fn send_checked(
    client: &Client,
    request: reqwest::RequestBuilder,
) -> Outcome<reqwest::Response> {
    let response = request
        .send()
        .await
        .map_err(|error| unreachable_failure(&client.base, &error))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| broken_failure(&client.base, &error))?;
    Err(http_failure(status, &body))
}

/// The URL of a file in a session's /workspace.
fn file_url(client: &Client, session: &str, path: &str) -> String {
    format!(
        "{}/v1/sessions/{}/files/{}",
        client.base,
        encode_path(session),
        encode_path(path)
    )
}

/// Sends a request whose successful answer is not (necessarily) JSON.
async fn send_raw(client: &Client, request: reqwest::RequestBuilder) -> Outcome<Vec<u8>> {
    let response = send_checked(client, request).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|error| broken_failure(&client.base, &error))?;
    Ok(bytes.to_vec())
}

fn file_rows(files: Vec<FileBody>) -> String {
    table(
        &["MODE", "SIZE", "MTIME", "PATH"],
        files
            .into_iter()
            .map(|file| {
                let suffix = if file.kind == "directory" { "/" } else { "" };
                vec![
                    file.mode,
                    file.size.to_string(),
                    file.mtime.to_string(),
                    format!("{}{suffix}", file.path),
                ]
            })
            .collect(),
    )
}

pub async fn run_process(args: ClientArgs<ProcessCommand>) -> ExitCode {
    finish(process(args).await)
}

async fn process(args: ClientArgs<ProcessCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command() {
        ProcessCommand::List { session } => {
            let path = format!("/v1/sessions/{}/processes", encode_path(session));
            let value = client
                .call(Method::GET, &path, &[], None::<&()>, None)
                .await?;
            client.show(value, |list: ProcessList| {
                table(
                    &["PID", "STATE", "EXIT", "STARTED", "ARGV"],
                    list.items
                        .into_iter()
                        .map(|p| {
                            vec![
                                p.pid.to_string(),
                                p.state,
                                p.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                                p.started_at.to_string(),
                                p.argv.join(" "),
                            ]
                        })
                        .collect(),
                )
            })
        }
        ProcessCommand::Kill { session, pid } => {
            let url = format!(
                "{}/v1/sessions/{}/processes/{pid}",
                client.base,
                encode_path(session)
            );
            send_raw(&client, authorized(&client, client.http.delete(url)))
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn lines_are_split_across_chunks() {
        let mut buffer = b"{\"a\":1}\n{\"b\"".to_vec();
        assert_eq!(take_lines(&mut buffer), vec![b"{\"a\":1}".to_vec()]);
        buffer.extend_from_slice(b":2}\n");
        assert_eq!(take_lines(&mut buffer), vec![b"{\"b\":2}".to_vec()]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn blank_lines_and_carriage_returns_are_dropped() {
        let mut buffer = b"\n{\"a\":1}\r\n\r\n{\"b\"".to_vec();
        assert_eq!(take_lines(&mut buffer), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(buffer, b"{\"b\"".to_vec());
    }

    #[test]
    fn a_replayed_stream_collects_into_one_result() {
        let body = concat!(
            r#"{"type":"stdout","data":"o1 "}"#,
            "\n",
            r#"{"type":"stderr","data":"e"}"#,
            "\n",
            r#"{"type":"stdout","data":"o2"}"#,
            "\n",
            r#"{"type":"exit","exit_code":124,"signal":null,"duration_ms":5,"#,
            r#""reason_code":"EXEC_TIMEOUT","message":"late"}"#,
        );
        let Ok(result) = collect_stream(body.as_bytes()) else {
            panic!("a complete stream must collect");
        };
        assert_eq!(
            (
                result.exit_code,
                result.stdout.as_str(),
                result.stderr.as_str()
            ),
            (124, "o1 o2", "e")
        );
        assert_eq!(result.reason_code.as_deref(), Some("EXEC_TIMEOUT"));
        let cut = br#"{"type":"stdout","data":"o"}"#;
        assert_eq!(
            collect_stream(cut).err().map(|f| f.code),
            Some(exit::INTERNAL)
        );
    }

    #[test]
    fn paths_keep_their_slashes() {
        assert_eq!(encode_path("a b/c%d"), "a%20b/c%25d");
        assert_eq!(encode_path("a/../e"), "a%2F..%2Fe");
        assert_eq!(encode_path(".."), "..%2F");
    }

    #[test]
    fn exit_codes_are_clamped() {
        assert_eq!(exit_code_of(0), 0);
        assert_eq!(exit_code_of(137), 137);
        assert_eq!(exit_code_of(-1), 255);
        assert_eq!(exit_code_of(1000), 255);
    }
}
