//! Where a repository's password comes from: `REWINDB_PASSWORD`,
//! `REWINDB_PASSWORD_FILE` or `REWINDB_PASSWORD_COMMAND` (restic's
//! conventions), else a prompt when stdin is a terminal. Never a command-line
//! flag: those are visible to every user in `ps`.

use std::io::IsTerminal;

use zeroize::Zeroizing;

/// A password, zeroized when dropped, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(text: String) -> Password {
        Password(Zeroizing::new(text))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// The variables a password can be given in.
pub const VARIABLES: [&str; 3] = [
    "REWINDB_PASSWORD",
    "REWINDB_PASSWORD_FILE",
    "REWINDB_PASSWORD_COMMAND",
];

/// Whether the environment names a password (a repository found plain
/// while one is given is refused: see `Repository::open_in`).
pub fn given() -> bool {
    VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

/// How a restored PostgreSQL server's restore_command (`wal fetch`) gets
/// the password this process was given: the same file (as an absolute
/// path) or command. A password given any other way would have to be
/// written into postgresql.auto.conf, so it is refused.
pub fn for_restore_command() -> Result<(&'static str, String), String> {
    if let Some(path) = std::env::var_os("REWINDB_PASSWORD_FILE") {
        let path = std::path::absolute(&path).map_err(|e| format!("REWINDB_PASSWORD_FILE: {e}"))?;
        return Ok(("REWINDB_PASSWORD_FILE", path.display().to_string()));
    }
    if let Ok(command) = std::env::var("REWINDB_PASSWORD_COMMAND") {
        return Ok(("REWINDB_PASSWORD_COMMAND", command));
    }
    Err(
        "the repository is encrypted, and the restored server's restore_command (`rewindb \
         wal fetch`) needs its password: give it in REWINDB_PASSWORD_FILE (a file the \
         server's OS user can read) or REWINDB_PASSWORD_COMMAND, which restore_command then \
         uses too; a password in REWINDB_PASSWORD or typed at a prompt is never written into \
         the server's configuration"
            .into(),
    )
}

/// The password the environment gives, if any. An empty password, an
/// unreadable file or a failing command is an error that says which.
pub fn from_environment() -> Result<Option<Password>, String> {
    let set: Vec<&str> = VARIABLES
        .into_iter()
        .filter(|v| std::env::var_os(v).is_some())
        .collect();
    let text = match set.as_slice() {
        [] => return Ok(None),
        [_, _, ..] => {
            return Err(format!(
                "{} are all set; set only one of them",
                set.join(" and ")
            ));
        }
        ["REWINDB_PASSWORD"] => Zeroizing::new(
            std::env::var("REWINDB_PASSWORD")
                .map_err(|_| "REWINDB_PASSWORD is not valid UTF-8".to_string())?,
        ),
        ["REWINDB_PASSWORD_FILE"] => {
            return from_file_variable("REWINDB_PASSWORD_FILE");
        }
        _ => from_command()?,
    };
    if text.is_empty() {
        return Err(format!("{} gives an empty password", set[0]));
    }
    Ok(Some(Password(text)))
}

/// The password in the file the variable `var` names, if it is set
/// (`REWINDB_PASSWORD_FILE`, and `REWINDB_NEW_PASSWORD_FILE` /
/// `REWINDB_TO_PASSWORD_FILE` for `key add` and `copy`): its first line.
pub fn from_file_variable(var: &str) -> Result<Option<Password>, String> {
    let Some(path) = std::env::var_os(var) else {
        return Ok(None);
    };
    let path = std::path::Path::new(&path);
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("{var} {}: {e}", path.display()))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{var} {} is not UTF-8 text", path.display()))?;
    let text = Zeroizing::new(one_line(text).to_string());
    if text.is_empty() {
        return Err(format!(
            "{var} {} is empty; put the password on its first line",
            path.display()
        ));
    }
    Ok(Some(Password(text)))
}

/// The password without the line end a file or command adds.
fn one_line(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

/// Runs `REWINDB_PASSWORD_COMMAND` with `sh -c`; its standard output is the
/// password.
fn from_command() -> Result<Zeroizing<String>, String> {
    let command = std::env::var("REWINDB_PASSWORD_COMMAND")
        .map_err(|_| "REWINDB_PASSWORD_COMMAND is not valid UTF-8".to_string())?;
    let output = std::process::Command::new("sh")
        .args(["-c", &command])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("REWINDB_PASSWORD_COMMAND {command:?} could not run: {e}"))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "REWINDB_PASSWORD_COMMAND {command:?} failed ({}){}",
            output.status,
            match stderr.trim() {
                "" => String::new(),
                s => format!(": {s}"),
            }
        ));
    }
    let text = std::str::from_utf8(&stdout)
        .map_err(|_| format!("REWINDB_PASSWORD_COMMAND {command:?} printed no UTF-8 text"))?;
    Ok(Zeroizing::new(one_line(text).to_string()))
}

/// The password from the environment, else asked on the terminal (twice
/// when `confirm`, for a new one). `None` when neither can give one.
pub fn obtain(prompt: &str, confirm: bool) -> Result<Option<Password>, String> {
    match from_environment()? {
        Some(p) => Ok(Some(p)),
        None => ask(prompt, confirm),
    }
}

/// A password typed on the terminal (without echo; twice when `confirm`);
/// `None` when stdin is not a terminal.
pub fn ask(prompt: &str, confirm: bool) -> Result<Option<Password>, String> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let read = |p: &str| {
        rpassword::prompt_password(p)
            .map(Zeroizing::new)
            .map_err(|e| format!("reading the password from the terminal: {e}"))
    };
    let first = read(prompt)?;
    if first.is_empty() {
        return Err("the password is empty".into());
    }
    if confirm && *read("enter it again: ")? != *first {
        return Err("the two passwords differ".into());
    }
    Ok(Some(Password(first)))
}
