//! `lcw service`: `lcw run` as a systemd service. `install` writes the unit (notify type, restart
//! with back-off, watchdog, sandbox, the keystore password as a credential); `uninstall`,
//! `status` and `logs` hand over to systemctl and journalctl.
//!
//! The unit is built by [`unit`], a pure function of [`UnitSpec`]; the rest finds paths, asks
//! `systemctl --version` which directives the installed systemd knows, and writes the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::args::DataArgs;

/// `lcw service ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write a systemd unit running `lcw run` with the flags given after `--`.
    Install(InstallArgs),
    /// `systemctl disable --now` the unit, then remove its file.
    Uninstall(UnitArgs),
    /// `systemctl status` of the unit.
    Status(UnitArgs),
    /// `journalctl -u` of the unit; arguments after `--` go to journalctl (`-- -f`).
    Logs(LogsArgs),
}

/// Which unit.
#[derive(Debug, Clone, Args)]
pub(crate) struct UnitArgs {
    /// Unit name, without `.service`.
    #[arg(long, env = "LCW_SERVICE_NAME", default_value = "lcw")]
    name: String,
    /// A user unit (~/.config/systemd/user, `systemctl --user`) instead of a system one.
    #[arg(long, env = "LCW_SERVICE_USER")]
    user: bool,
}

/// `lcw service install`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    unit: UnitArgs,
    /// File whose first line is the keystore password. The unit names the file
    /// (`LoadCredential=lcw-password:FILE`); systemd hands it to lcw as a credential, never
    /// through the environment.
    #[arg(long, env = "LCW_SERVICE_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Account the service runs as (system units only; default root).
    #[arg(long, env = "LCW_SERVICE_RUN_AS")]
    run_as: Option<String>,
    /// Seconds without progress (indexer, worker loop) before systemd restarts lcw.
    #[arg(long, env = "LCW_SERVICE_WATCHDOG", default_value_t = 60)]
    watchdog_secs: u64,
    /// Write the unit here instead of /etc/systemd/system/NAME.service
    /// (~/.config/systemd/user/NAME.service with --user).
    #[arg(long, env = "LCW_SERVICE_PATH")]
    path: Option<PathBuf>,
    /// Show the unit on stdout instead of writing it.
    #[arg(long)]
    print: bool,
    /// Also enable and start it (`systemctl enable --now`).
    #[arg(long)]
    now: bool,
    /// The flags of `lcw run`, after `--`.
    #[arg(last = true, value_name = "RUN FLAGS")]
    run: Vec<String>,
}

/// `lcw service logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    unit: UnitArgs,
    /// Arguments for journalctl, after `--`.
    #[arg(last = true)]
    journalctl: Vec<String>,
}

pub(crate) fn run(command: ServiceCommand, data: DataArgs) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Install(args) => install(args, data),
        ServiceCommand::Uninstall(u) => uninstall(&u),
        ServiceCommand::Status(u) => exec(systemctl(&u).arg("status").arg(u.unit_name())),
        ServiceCommand::Logs(l) => {
            let mut cmd = Command::new("journalctl");
            if l.unit.user {
                cmd.arg("--user");
            }
            exec(cmd.arg("-u").arg(l.unit.unit_name()).args(&l.journalctl))
        }
    }
}

impl UnitArgs {
    fn unit_name(&self) -> String {
        format!("{}.service", self.name)
    }

    fn default_path(&self) -> anyhow::Result<PathBuf> {
        if !self.user {
            return Ok(Path::new("/etc/systemd/system").join(self.unit_name()));
        }
        let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(std::env::var_os("HOME").context("--user needs HOME or XDG_CONFIG_HOME")?).join(".config")
            }
        };
        Ok(config.join("systemd/user").join(self.unit_name()))
    }
}

/// Everything the unit says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitSpec {
    /// The lcw binary, absolute.
    pub exe: PathBuf,
    /// The data directory, absolute: the only writable path (with the store's, if elsewhere).
    pub data_dir: PathBuf,
    /// Further writable directories (a --db outside the data directory).
    pub writable: Vec<PathBuf>,
    pub run: Vec<String>,
    pub password_file: Option<PathBuf>,
    pub run_as: Option<String>,
    pub watchdog_secs: u64,
    pub user: bool,
    /// The installed systemd's version (None: unknown, only directives of 252 are written).
    pub systemd: Option<u32>,
}

/// The first systemd version that knows `RestartSteps=` and `RestartMaxDelaySec=`.
const RESTART_STEPS_SINCE: u32 = 254;

/// The unit file.
pub(crate) fn unit(spec: &UnitSpec) -> String {
    let mut exec = vec![quote(&spec.exe.to_string_lossy()), "--data-dir".into()];
    exec.push(quote(&spec.data_dir.to_string_lossy()));
    exec.push("run".into());
    exec.extend(spec.run.iter().map(|a| quote(a)));
    let mut u = String::new();
    u.push_str("[Unit]\nDescription=lcw run: indexer, settler, worker and API of a LightChain AI worker\n");
    u.push_str("Wants=network-online.target\nAfter=network-online.target\n");
    // Restarts go on for good, spaced by the back-off below.
    u.push_str("StartLimitIntervalSec=0\n\n[Service]\n");
    u.push_str("Type=notify\nNotifyAccess=main\n");
    u.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    u.push_str("Restart=always\nRestartSec=5s\n");
    if spec.systemd.is_some_and(|v| v >= RESTART_STEPS_SINCE) {
        u.push_str("RestartSteps=8\nRestartMaxDelaySec=5min\n");
    }
    // READY=1 comes once the indexer reached the head; a long first sync extends the start
    // timeout while it advances (EXTEND_TIMEOUT_USEC).
    u.push_str("TimeoutStartSec=5min\nTimeoutStopSec=2min\n");
    u.push_str(&format!("WatchdogSec={}\n", spec.watchdog_secs.max(2)));
    if let Some(file) = &spec.password_file {
        u.push_str(&format!(
            "LoadCredential={}:{}\n",
            lcw_chain::keys::PASSWORD_CREDENTIAL,
            quote(&file.to_string_lossy())
        ));
    }
    if let Some(account) = &spec.run_as {
        u.push_str(&format!("User={account}\n"));
    }
    u.push_str("NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=read-only\nPrivateTmp=yes\n");
    let mut writable = vec![spec.data_dir.clone()];
    writable.extend(spec.writable.iter().filter(|p| !p.starts_with(&spec.data_dir)).cloned());
    let writable: Vec<String> = writable.iter().map(|p| quote(&p.to_string_lossy())).collect();
    u.push_str(&format!("ReadWritePaths={}\n\n", writable.join(" ")));
    let target = if spec.user { "default.target" } else { "multi-user.target" };
    u.push_str(&format!("[Install]\nWantedBy={target}\n"));
    u
}

/// An ExecStart word: as is when plain, else double-quoted with `"` and `\` escaped; `%` and `$`
/// doubled everywhere (systemd's specifiers and variables).
fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._:=@,+-%$".contains(c);
    if !escaped.is_empty() && escaped.chars().all(plain) {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `lcw run`'s flags, for checking them before they go into a unit.
#[derive(Debug, Parser)]
#[command(name = "lcw run", no_binary_name = true)]
struct RunLine {
    #[command(flatten)]
    _run: super::serve::RunArgs,
}

fn install(args: InstallArgs, data: DataArgs) -> anyhow::Result<()> {
    if args.unit.user && args.run_as.is_some() {
        anyhow::bail!("--run-as is for system units; a --user unit runs as its user");
    }
    if args.unit.name.is_empty() || args.unit.name.contains(['/', ' ']) {
        anyhow::bail!("--name {:?} is not a unit name: letters, digits, '-', '_' and '.'", args.unit.name);
    }
    // A unit is readable by every user of the machine (`systemctl show`): no credential in it.
    if let Some(flag) = args.run.iter().find(|a| lcw_schema::profile::redact_urls(a) != **a) {
        anyhow::bail!(
            "the lcw run flags hold a credential ({}); a unit is readable by every user of this machine: put the \
             URL in a network profile file (--network FILE, mode 0600) instead",
            lcw_schema::profile::redact_urls(flag)
        );
    }
    RunLine::try_parse_from(&args.run).map_err(|e| {
        anyhow::anyhow!(
            "the flags after -- are not lcw run's: {}",
            lcw_schema::profile::redact_urls(e.to_string().trim())
        )
    })?;
    let left_behind = shell_only_variables(std::env::vars_os().map(|(k, _)| k));
    if !left_behind.is_empty() {
        eprintln!(
            "warning: set in this shell but not in the unit: {}; give their flags after -- (the password: \
             --password-file)",
            left_behind.join(", ")
        );
    }
    let exe = std::env::current_exe().context("finding the lcw binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let data_dir = absolute(&data.data_dir)?;
    let writable =
        db_flag(&args.run).map(|db| absolute(&db)).transpose()?.and_then(|db| db.parent().map(Path::to_owned));
    let password_file = args.password_file.as_deref().map(absolute).transpose()?;
    if let Some(file) = &password_file
        && !file.is_file()
    {
        anyhow::bail!("--password-file {}: no such file", file.display());
    }
    let systemd = systemd_version();
    let spec = UnitSpec {
        exe,
        data_dir: data_dir.clone(),
        writable: writable.into_iter().collect(),
        run: args.run.clone(),
        password_file,
        run_as: args.run_as.clone(),
        watchdog_secs: args.watchdog_secs,
        user: args.unit.user,
        systemd,
    };
    let text = unit(&spec);
    if args.print {
        print!("{text}");
        return Ok(());
    }
    let path = match &args.path {
        Some(p) => p.clone(),
        None => args.unit.default_path()?,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // ReadWritePaths= must exist when the service starts.
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    if !manager_running() {
        // A container or a machine booted without systemd: the file is written for later.
        eprintln!(
            "systemd is not running here; where it runs: systemctl {}daemon-reload && systemctl {}enable --now {}",
            user_flag(&args.unit),
            user_flag(&args.unit),
            args.unit.unit_name()
        );
        return Ok(());
    }
    run_systemctl(&args.unit, &["daemon-reload"])?;
    if args.now {
        run_systemctl(&args.unit, &["enable", "--now", &args.unit.unit_name()])?;
        eprintln!("started; follow it with lcw service logs -- -f");
    } else {
        eprintln!("start it with: systemctl {}enable --now {}", user_flag(&args.unit), args.unit.unit_name());
    }
    Ok(())
}

fn uninstall(u: &UnitArgs) -> anyhow::Result<()> {
    let path = u.default_path()?;
    if manager_running()
        && let Err(e) = run_systemctl(u, &["disable", "--now", &u.unit_name()])
    {
        eprintln!("warning: {e:#}; removing the unit file anyway");
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("no unit at {}", path.display()),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    if manager_running() {
        run_systemctl(u, &["daemon-reload"])?;
    }
    Ok(())
}

fn user_flag(u: &UnitArgs) -> &'static str {
    if u.user { "--user " } else { "" }
}

fn systemctl(u: &UnitArgs) -> Command {
    let mut cmd = Command::new("systemctl");
    if u.user {
        cmd.arg("--user");
    }
    cmd
}

fn run_systemctl(u: &UnitArgs, args: &[&str]) -> anyhow::Result<()> {
    let status = systemctl(u).args(args).status().with_context(|| format!("running systemctl {}", args.join(" ")))?;
    anyhow::ensure!(status.success(), "systemctl {} failed ({status})", args.join(" "));
    Ok(())
}

/// Replaces this process with `cmd` (its exit status becomes ours).
fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    Err(anyhow::Error::new(e).context(format!("running {}", cmd.get_program().to_string_lossy())))
}

/// Whether systemd is the running service manager (`sd_booted`: /run/systemd/system exists) and
/// `systemctl` is there to talk to it.
fn manager_running() -> bool {
    Path::new("/run/systemd/system").is_dir() && systemd_version().is_some()
}

/// The version `systemctl --version` reports (`systemd 252 (252.39-1~deb12u2)`).
fn systemd_version() -> Option<u32> {
    let out = Command::new("systemctl").arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<u32> {
    text.lines().next()?.strip_prefix("systemd ")?.split_whitespace().next()?.parse().ok()
}

/// The names (never the values) of variables lcw reads that this shell sets: the unit runs
/// without them.
fn shell_only_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    const READ: [&str; 6] =
        ["RPC_URL", "CHAIN_ID", "WORKER_KEYSTORE_PATH", "BEACON_API_URL", "WORKER_GATEWAY_URL", "SUPPORTED_MODELS"];
    const OWN: [&str; 4] = ["LCW_DATA_DIR", "LCW_LOG", "LCW_LOG_FORMAT", "LCW_SERVICE_"];
    let mut found: Vec<String> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| READ.contains(&n.as_str()) || (n.starts_with("LCW_") && !OWN.iter().any(|o| n.starts_with(o))))
        .collect();
    found.sort();
    found
}

/// The value of `--db` among `lcw run`'s flags.
fn db_flag(run: &[String]) -> Option<PathBuf> {
    let mut it = run.iter();
    while let Some(a) = it.next() {
        if a == "--db" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--db=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            exe: "/usr/local/bin/lcw".into(),
            data_dir: "/var/lib/lcw".into(),
            writable: vec![],
            run: vec!["--work".into(), "--network".into(), "testnet".into()],
            password_file: Some("/etc/lcw/password".into()),
            run_as: None,
            watchdog_secs: 60,
            user: false,
            systemd: Some(252),
        }
    }

    #[test]
    fn the_unit_names_the_password_file_and_sandboxes_the_data_dir() {
        let u = unit(&spec());
        assert!(u.contains("ExecStart=/usr/local/bin/lcw --data-dir /var/lib/lcw run --work --network testnet\n"));
        assert!(u.contains("LoadCredential=lcw-password:/etc/lcw/password\n"));
        assert!(u.contains("ReadWritePaths=/var/lib/lcw\n"));
        for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=60", "ProtectSystem=strict", "PrivateTmp=yes"] {
            assert!(u.lines().any(|l| l == line), "{line} in\n{u}");
        }
        assert!(!u.contains("Environment"), "nothing through the environment");
    }

    #[test]
    fn restart_steps_only_for_a_systemd_that_knows_them() {
        assert!(!unit(&spec()).contains("RestartSteps"));
        assert!(unit(&UnitSpec { systemd: None, ..spec() }).lines().all(|l| !l.starts_with("RestartMax")));
        let new = unit(&UnitSpec { systemd: Some(255), ..spec() });
        assert!(new.contains("RestartSteps=8\nRestartMaxDelaySec=5min\n"));
    }

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(quote("/plain/path"), "/plain/path");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("50%"), "50%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn a_store_outside_the_data_dir_is_writable_too() {
        let u = unit(&UnitSpec { writable: vec!["/srv/store".into(), "/var/lib/lcw/sub".into()], ..spec() });
        assert!(u.contains("ReadWritePaths=/var/lib/lcw /srv/store\n"), "{u}");
        assert_eq!(db_flag(&["--work".into(), "--db".into(), "/x/y.db".into()]), Some("/x/y.db".into()));
        assert_eq!(db_flag(&["--db=/x/y.db".into()]), Some("/x/y.db".into()));
    }

    #[test]
    fn variables_the_unit_lacks_are_named() {
        let names = ["LCW_PASSWORD", "RPC_URL", "HOME", "LCW_DATA_DIR", "LCW_SERVICE_NAME", "LCW_LOG"];
        let found = shell_only_variables(names.iter().map(std::ffi::OsString::from));
        assert_eq!(found, ["LCW_PASSWORD", "RPC_URL"]);
    }

    #[test]
    fn versions_read_from_systemctl() {
        assert_eq!(parse_version("systemd 252 (252.39-1~deb12u2)\n+PAM"), Some(252));
        assert_eq!(parse_version("something else"), None);
    }
}
