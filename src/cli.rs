//! The command line: `lanchat` serves; `--migrate`, `--create-user` and the
//! subcommands do one job and exit.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::datadir::DataDir;
use crate::db::{self, Db, migrations};
use crate::error::AppError;
use crate::users::{self, NewUser};

#[derive(Debug, Parser)]
#[command(
    name = "lanchat",
    version,
    about = "A self-hosted messenger for office LANs, in one binary.",
    long_about = "A self-hosted messenger for office LANs, in one binary.\n\n\
                  With no arguments it serves the web client and the API (data in ./lanchat-data, \
                  listening on 0.0.0.0:8080) and prints the addresses people can open."
)]
pub struct Cli {
    /// Read settings from this TOML file (see config.example.toml).
    #[arg(long, value_name = "FILE", env = "LANCHAT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Keep the database and files here (default ./lanchat-data).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Listen on this address (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR:PORT", global = true)]
    pub listen: Option<String>,
    /// Apply pending database migrations and exit.
    #[arg(long, conflicts_with = "create_user")]
    pub migrate: bool,
    /// Create a user (asks for the password) and exit.
    #[arg(long, value_name = "NAME")]
    pub create_user: Option<String>,
    /// With --create-user: make the user an admin.
    #[arg(long, requires = "create_user")]
    pub admin: bool,
    /// Read the password from the first line of standard input instead of asking.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Set a new password for a user and sign out all their devices.
    ResetPassword {
        /// The username.
        name: String,
    },
    /// Export conversations (all, or one) to a file, as JSON or a readable HTML page.
    Export {
        /// Only this conversation id (default: every conversation).
        #[arg(long, value_name = "ID")]
        conversation: Option<i64>,
        /// "json" or "html".
        #[arg(long, default_value = "json")]
        format: String,
        /// Where to write the export.
        file: PathBuf,
    },
    /// Write a backup archive (database snapshot and attachment files) to FILE.
    /// Works while the server is running.
    Backup {
        /// The archive to write (a tar file); it must not exist yet.
        file: PathBuf,
    },
    /// Restore a backup archive into the data directory, which must be empty or
    /// not exist yet.
    Restore {
        /// The archive to restore (made by `lanchat backup` or the admin API).
        file: PathBuf,
    },
    /// Show the local certificate authority (HTTPS): its file, fingerprint, and
    /// the commands that install it on Windows, macOS and Linux machines.
    Ca,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error("{0}")]
    App(#[from] AppError),
    #[error("{0}")]
    Backup(#[from] crate::backup::BackupError),
    #[error("{0}")]
    Usage(String),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = check_conflicts(&cli) {
        err.exit();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lanchat: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--migrate` and `--create-user` are commands of their own. (clap's
/// `args_conflicts_with_subcommands` would also refuse the global options before
/// a subcommand, as in `lanchat --data-dir DIR serve`, so this is checked here.)
fn check_conflicts(cli: &Cli) -> Result<(), clap::Error> {
    if cli.command.is_some() && (cli.migrate || cli.create_user.is_some()) {
        return Err(Cli::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            "--migrate and --create-user cannot be combined with a subcommand",
        ));
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), CliError> {
    if cli.password_stdin
        && cli.create_user.is_none()
        && !matches!(cli.command, Some(Command::ResetPassword { .. }))
    {
        return Err(CliError::Usage(
            "--password-stdin goes with --create-user or reset-password".into(),
        ));
    }
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        listen: cli.listen.clone(),
    };
    let loaded = Config::load(cli.config.as_deref(), &overrides)?;
    init_logging(&loaded.config);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = loaded.config;

    if cli.migrate {
        return migrate(&config);
    }
    if let Some(name) = &cli.create_user {
        return create_user(&config, name, cli.admin, cli.password_stdin);
    }
    match cli.command {
        Some(Command::ResetPassword { name }) => reset_password(&config, &name, cli.password_stdin),
        Some(Command::Export {
            conversation,
            format,
            file,
        }) => export(&config, conversation, &format, &file),
        Some(Command::Backup { file }) => backup(&config, &file),
        Some(Command::Restore { file }) => restore(&config, &file),
        Some(Command::Ca) => ca(&config),
        Some(Command::Serve) | None => serve(config),
    }
}

fn serve(config: Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lanchat-worker")
        .build()
        .map_err(|err| CliError::Usage(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(crate::server::serve(config))?;
    Ok(())
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn migrate(config: &Config) -> Result<(), CliError> {
    let data_dir = DataDir::open_locked(&config.server.data_dir)?;
    let mut conn = db::open_writer_connection(&data_dir.database_path())?;
    let applied = migrations::migrate(&mut conn)?;
    if applied.is_empty() {
        println!("no migration pending; the database is up to date");
    } else {
        for migration in &applied {
            println!("applied {:04}_{}", migration.version, migration.name);
        }
    }
    Ok(())
}

/// Opens the database for a one-shot command (beside a live server if need be).
fn open_for_command(config: &Config) -> Result<(DataDir, Db), CliError> {
    let data_dir = DataDir::open_unlocked(&config.server.data_dir)?;
    let path = data_dir.database_path();
    let mut conn = db::open_writer_connection(&path)?;
    migrations::migrate(&mut conn)?;
    // One-shot commands send no messages; indexing is the server's.
    let db = Db::start(
        &path,
        conn,
        1,
        Box::new(|_| {}),
        db::writer::no_background(),
    )?;
    Ok((data_dir, db))
}

fn create_user(config: &Config, name: &str, admin: bool, from_stdin: bool) -> Result<(), CliError> {
    let username = users::normalize_username(name)?;
    let password = read_new_password(from_stdin)?;
    users::validate_password("password", &password)?;
    let hash = crate::auth::password::hash(&password).map_err(AppError::internal)?;
    let (_dir, db) = open_for_command(config)?;
    let result = db.writer.run_blocking(move |ctx| {
        users::insert(
            ctx,
            &NewUser {
                username: &username,
                display_name: "",
                password_hash: &hash,
                is_admin: admin,
            },
        )
    });
    db.writer.shutdown_blocking();
    let user = result?;
    println!(
        "created {}user {} (id {})",
        if admin { "admin " } else { "" },
        user.username,
        user.id
    );
    Ok(())
}

fn reset_password(config: &Config, name: &str, from_stdin: bool) -> Result<(), CliError> {
    let username = users::normalize_username(name)?;
    let password = read_new_password(from_stdin)?;
    users::validate_password("password", &password)?;
    let hash = crate::auth::password::hash(&password).map_err(AppError::internal)?;
    let (_dir, db) = open_for_command(config)?;
    let result = db.writer.run_blocking(move |ctx| {
        let (user, _) = users::get_with_hash(ctx.conn(), &username)?
            .ok_or_else(|| AppError::not_found(format!("no user named {username}")))?;
        users::set_password_hash(ctx, user.id, &hash)?;
        crate::auth::sessions::revoke_all(ctx, user.id, None)?;
        Ok::<_, AppError>(user)
    });
    db.writer.shutdown_blocking();
    let user = result?;
    println!(
        "password of {} changed; their devices are signed out (a running server applies this within {} s)",
        user.username, config.auth.access_token_ttl_secs
    );
    Ok(())
}

fn export(
    config: &Config,
    conversation: Option<i64>,
    format: &str,
    file: &std::path::Path,
) -> Result<(), CliError> {
    use crate::chat::export::{self, Format};
    let format =
        Format::parse(format).ok_or_else(|| CliError::Usage("--format is json or html".into()))?;
    let (_dir, db) = open_for_command(config)?;
    let result = (|| -> Result<(), CliError> {
        let conn = db.open_reader()?;
        let ids = match conversation {
            Some(id) => vec![id],
            None => export::all_conversation_ids(&conn)?,
        };
        let out = std::fs::File::create(file)
            .map_err(|err| CliError::Usage(format!("cannot write {}: {err}", file.display())))?;
        let mut out = std::io::BufWriter::new(out);
        export::write(&conn, None, &ids, format, db::now_ms(), &mut out)?;
        println!(
            "exported {} conversation(s) to {}",
            ids.len(),
            file.display()
        );
        Ok(())
    })();
    db.writer.shutdown_blocking();
    result
}

/// `lanchat backup FILE`: reads the database read-only beside a running server
/// (no lock, no migration) and writes the archive atomically.
fn backup(config: &Config, file: &std::path::Path) -> Result<(), CliError> {
    let data_dir = &config.server.data_dir;
    if !data_dir.join(db::DB_FILE).is_file() {
        return Err(CliError::Usage(format!(
            "there is no lanchat database in {}; pass --data-dir",
            data_dir.display()
        )));
    }
    let manifest = crate::backup::archive_to_file(data_dir, file)?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} bytes): database schema {}, {} attachment file(s)",
        file.display(),
        bytes,
        manifest.schema_version,
        manifest.attachment_count()
    );
    Ok(())
}

/// `lanchat restore FILE`: only into an empty or new data directory.
fn restore(config: &Config, file: &std::path::Path) -> Result<(), CliError> {
    let data_dir = &config.server.data_dir;
    let manifest = crate::backup::restore(file, data_dir)?;
    println!(
        "restored {} into {}: backup of {} made by lanchat {}, database schema {}, {} attachment file(s)",
        file.display(),
        data_dir.display(),
        crate::backup::utc_stamp(manifest.created_at),
        manifest.lanchat_version,
        manifest.schema_version,
        manifest.attachment_count()
    );
    println!(
        "start the server on it with: lanchat --data-dir {}",
        data_dir.display()
    );
    Ok(())
}

/// `lanchat ca`: where the local CA is and how to push it to every machine.
fn ca(config: &Config) -> Result<(), CliError> {
    let text = crate::tls::admin_guide(config).map_err(|err| CliError::Usage(err.to_string()))?;
    print!("{text}");
    Ok(())
}

/// The new password: one line of stdin with --password-stdin, else asked twice
/// on the terminal.
fn read_new_password(from_stdin: bool) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if from_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|err| CliError::Usage(format!("cannot read the password: {err}")))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if !stdin.is_terminal() {
        return Err(CliError::Usage(
            "standard input is not a terminal: pass --password-stdin and pipe the password".into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|err| CliError::Usage(format!("cannot read the password: {err}")))?;
    let second = rpassword::prompt_password("Repeat it: ")
        .map_err(|err| CliError::Usage(format!("cannot read the password: {err}")))?;
    let _ = std::io::stderr().flush();
    if first != second {
        return Err(CliError::Usage("the two passwords differ".into()));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "lanchat",
            "--create-user",
            "alice",
            "--admin",
            "--password-stdin",
        ])
        .expect("parse");
        assert_eq!(cli.create_user.as_deref(), Some("alice"));
        assert!(cli.admin && cli.password_stdin);
        assert!(Cli::try_parse_from(["lanchat", "--admin"]).is_err());
        assert!(Cli::try_parse_from(["lanchat", "--migrate", "--create-user", "x"]).is_err());
        let cli = Cli::try_parse_from(["lanchat", "--data-dir", "d", "export", "out.json"])
            .expect("parse");
        assert!(matches!(cli.command, Some(Command::Export { .. })));
        let cli = Cli::try_parse_from(["lanchat", "export", "--data-dir", "d", "out.json"])
            .expect("parse");
        assert_eq!(cli.data_dir.as_deref(), Some(std::path::Path::new("d")));
        // Global options go before or after a subcommand.
        for args in [
            &["lanchat", "--data-dir", "d", "reset-password", "bob"][..],
            &["lanchat", "reset-password", "bob", "--data-dir", "d"][..],
            &["lanchat", "--listen", "127.0.0.1:1", "serve"][..],
        ] {
            let cli = Cli::try_parse_from(args).expect("parse");
            assert!(check_conflicts(&cli).is_ok(), "{args:?}");
        }
        let cli = Cli::try_parse_from(["lanchat", "--migrate", "serve"]).expect("parse");
        assert!(check_conflicts(&cli).is_err());
        let cli =
            Cli::try_parse_from(["lanchat", "backup", "b.tar", "--data-dir", "d"]).expect("backup");
        assert!(matches!(cli.command, Some(Command::Backup { .. })));
        assert!(cli.data_dir.is_some());
        let cli = Cli::try_parse_from(["lanchat", "--data-dir", "d", "restore", "b.tar"])
            .expect("restore");
        assert!(matches!(cli.command, Some(Command::Restore { .. })));
        Cli::try_parse_from(["lanchat", "--data-dir", "d", "reset-password", "bob"])
            .expect("global flag before a subcommand");
    }
}
