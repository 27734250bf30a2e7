//! Compiling a component in a child process, under a time and a memory
//! budget.
//!
//! Cranelift cannot be interrupted nor held to a memory bound: a component
//! built to compile slowly, or into a great deal of memory (a million empty
//! functions in a few MiB), would hold a thread and the server's memory for
//! as long as it likes. So a host may compile in a child process instead
//! ([`CompilerProcess`]), which writes the compiled artifact back, is
//! killed once the time budget is spent, and is refused memory past its
//! memory budget. The child is the host's own program
//! run with arguments that make it call [`compile_from_stdin`]; it compiles
//! for an engine configured exactly as the host's, and the host checks the
//! artifact against its own engine when it deserializes it.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use wasmtime::component::Component;

use crate::engine::config;
use crate::engine::functions::FunctionCache;

/// The most a compiler process may say about why it failed.
const MAX_MESSAGE: u64 = 64 * 1024;

/// The most bytes of compiled functions a [`FunctionCache`] folder keeps.
const FUNCTION_CACHE_BYTES: u64 = 1 << 30;

/// A program that compiles components when run with `args` (by calling
/// [`compile_from_stdin`]), and how long one compilation may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerProcess {
    /// The program, usually the host's own executable.
    pub program: PathBuf,
    /// The arguments that make it compile; the engine's settings follow.
    pub args: Vec<OsString>,
    /// How long one compilation may take, from starting the process to
    /// its last byte of output.
    pub budget: Duration,
    /// The most memory the process may take, in bytes: it is passed as
    /// `--memory-budget-bytes`, and the program must hold itself to it.
    pub memory_budget: u64,
    /// A folder of compiled functions to take unchanged functions from and
    /// keep new ones in ([`FunctionCache`]), passed as `--function-cache`.
    pub functions: Option<PathBuf>,
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The bytes are not a valid component.
    #[error("{0}")]
    Invalid(String),
    /// Compiling took longer than the budget; the compiler was killed.
    #[error(
        "compiling it took longer than the budget of {} ms, so it was stopped",
        .0.as_millis()
    )]
    OverBudget(Duration),
    /// Compiling needed more memory than the budget of this many bytes.
    #[error(
        "compiling it needed more memory than the budget of {} MiB, so it was stopped",
        .0 >> 20
    )]
    OverMemory(u64),
    /// The compiler process could not run, or died without a word.
    #[error("the compiler process failed: {0}")]
    Process(String),
}

impl CompilerProcess {
    /// Compiles `bytes` in a new process for `engine`, whose settings are
    /// `memory_bytes` and `fuel`, within the budget.
    pub(super) fn compile(
        &self,
        engine: &wasmtime::Engine,
        memory_bytes: usize,
        fuel: bool,
        bytes: &[u8],
    ) -> Result<Component, CompileError> {
        let failed = |what: &str, err: std::io::Error| {
            CompileError::Process(format!("{what} {}: {err}", self.program.display()))
        };
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg("--memory-bytes")
            .arg(memory_bytes.to_string())
            .arg("--memory-budget-bytes")
            .arg(self.memory_budget.to_string());
        if fuel {
            command.arg("--fuel");
        }
        if let Some(functions) = &self.functions {
            command.arg("--function-cache").arg(functions);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| failed("cannot start", err))?;
        let (mut stdin, mut stdout, mut stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        // The pipes are served on threads of their own, so the budget is
        // waited for here whatever the child does with them; once the
        // child is gone, each ends.
        let (artifact, message) = std::thread::scope(|threads| {
            threads.spawn(move || {
                // A child that died first closed the pipe; its message
                // says why.
                let _ = stdin.write_all(bytes);
            });
            let message = threads.spawn(move || {
                // Kept up to a bound, and drained to the end, so the child
                // never waits on a full pipe.
                let mut message = Vec::new();
                let _ = (&mut stderr).take(MAX_MESSAGE).read_to_end(&mut message);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                String::from_utf8_lossy(&message).into_owned()
            });
            let (done, output) = mpsc::channel();
            threads.spawn(move || {
                let mut artifact = Vec::new();
                let read = stdout.read_to_end(&mut artifact).map(|_| artifact);
                let _ = done.send(read);
            });
            let artifact = match output.recv_timeout(self.budget) {
                Ok(read) => read.map_err(|err| failed("cannot read from", err)),
                Err(_) => {
                    let _ = child.kill();
                    Err(CompileError::OverBudget(self.budget))
                }
            };
            (artifact, message.join().unwrap_or_default())
        });
        let status = child.wait().map_err(|err| failed("cannot wait for", err))?;
        let artifact = artifact?;
        if !status.success() {
            let message = message.trim();
            return Err(if status.code() == Some(INVALID) && !message.is_empty() {
                CompileError::Invalid(message.to_owned())
            } else if out_of_memory(status, message) {
                CompileError::OverMemory(self.memory_budget)
            } else {
                CompileError::Process(format!("it ended with {status}: {message}"))
            });
        }
        // SAFETY: the artifact was just written by the compiler this host
        // started for this engine's settings; `deserialize` still checks it
        // against this engine and refuses one that does not match.
        unsafe { Component::deserialize(engine, &artifact) }
            .map_err(|err| CompileError::Process(format!("its artifact is unusable: {err:#}")))
    }
}

/// Whether a compiler process that ended with `status`, saying `message`,
/// ran out of its memory: an allocation it was refused aborts it, in
/// words the standard library's handler writes.
fn out_of_memory(status: std::process::ExitStatus, message: &str) -> bool {
    use std::os::unix::process::ExitStatusExt as _;

    const SIGABRT: i32 = 6;
    status.signal() == Some(SIGABRT) || message.contains("memory allocation of")
}

/// The exit code of a compiler process refusing the component it was given.
const INVALID: i32 = 2;

/// The compiler process's side: reads a component's bytes from stdin,
/// compiles them for an engine with `memory_bytes` of memory per instance
/// and fuel metering if `fuel`, reusing and keeping compiled functions in
/// the folder `functions` if given, and writes the artifact to stdout. A
/// component that does not compile is reported on stderr, and the process
/// should exit with the returned code.
pub fn compile_from_stdin(memory_bytes: usize, fuel: bool, functions: Option<&Path>) -> i32 {
    let compiled = (|| -> anyhow::Result<Result<Vec<u8>, String>> {
        // Artifacts do not depend on how instances are allocated, and this
        // engine allocates none: without the host's pool, it reserves no
        // memory for instances, which the memory budget would count.
        let mut config = config(1, memory_bytes, fuel);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
        if let Some(folder) = functions {
            let cache = cap_std::fs::Dir::open_ambient_dir(folder, cap_std::ambient_authority())
                .and_then(|dir| FunctionCache::open(dir, FUNCTION_CACHE_BYTES))
                .map_err(|err| {
                    anyhow::anyhow!("cannot read the function cache {}: {err}", folder.display())
                })?;
            config.enable_incremental_compilation(Arc::new(cache))?;
        }
        let engine = wasmtime::Engine::new(&config)?;
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(engine
            .precompile_component(&bytes)
            .map_err(|err| format!("{err:#}")))
    })();
    match compiled {
        Ok(Ok(artifact)) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("cannot write the artifact: {err}");
                1
            }
        },
        Ok(Err(invalid)) => {
            eprintln!("{invalid}");
            INVALID
        }
        Err(err) => {
            eprintln!("{err:#}");
            1
        }
    }
}
