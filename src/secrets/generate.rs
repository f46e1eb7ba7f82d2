//! Making a secrets directory: a CA (ECDSA P-256), a server certificate for `localhost`,
//! `127.0.0.1` and every `--host`, one client certificate, an nkey user per role, and the
//! server's `auth.conf` and `server.conf`. Private keys and seeds are written mode 0600 into a
//! directory of mode 0700; nothing existing is overwritten.

use super::{DEFAULT_HOSTS, Secrets};
use anyhow::{Context, Result, bail};
use ffleet_runtime::security::{Role, auth_conf};
use ffleet_runtime::{Tenant, subjects};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How long the certificates are valid.
const VALID_DAYS: i64 = 3650;

/// Makes every secret in `dir` (created if needed; refused if it already holds secrets), with
/// the default media bucket and no tenants.
pub fn init(dir: &Path, hosts: &[String]) -> Result<Secrets> {
    init_for(dir, hosts, ffleet_runtime::subjects::BUCKET_MEDIA, &[])
}

/// Like `init`, granting the object store operations on `media` (`storage.bucket`), with a
/// submitter identity of its own for each of `tenants`.
pub fn init_for(dir: &Path, hosts: &[String], media: &str, tenants: &[Tenant]) -> Result<Secrets> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let dir = std::fs::canonicalize(dir)?;
    let s = Secrets { dir: dir.clone() };
    if s.ca().exists() {
        bail!(
            "{} already holds secrets; remove it first to make new ones",
            dir.display()
        );
    }
    let (ca_cert, issuer) = ca()?;
    write(&s.ca(), &ca_cert.pem(), false)?;
    write(&dir.join("ca-key.pem"), &issuer.key().serialize_pem(), true)?;

    let mut names: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    // Client auth too: cluster nodes present it to each other on TLS routes.
    let (cert, key) = leaf(
        &issuer,
        names,
        "ffleet nats server",
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    write(&s.server_cert(), &cert, false)?;
    write(&s.server_key(), &key, true)?;
    let (cert, key) = leaf(
        &issuer,
        Vec::new(),
        "ffleet client",
        &[ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    write(&s.client_cert(), &cert, false)?;
    write(&s.client_key(), &key, true)?;

    for role in Role::ALL {
        user(&s, &role.to_string())?;
    }
    dashboard_token(&s)?;
    for t in tenants {
        user(&s, &subjects::tenant_identity(t))?;
    }
    let (users, tenants) = public_keys(&s)?;
    write(
        &s.auth_conf(),
        &auth_conf::render(&users, &tenants, media),
        false,
    )?;
    write(&s.server_conf(), &server_conf(&s), false)?;
    Ok(s)
}

/// A new dashboard token: two random UUIDs, 244 bits, hex, nothing a shell or a header must
/// escape.
fn dashboard_token(s: &Secrets) -> Result<()> {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write(&s.dashboard_token(), &format!("{token}\n"), true)
}

/// Adds to `s` what this release makes and a directory from an earlier one lacks: the roles
/// that came later (the dashboard's viewer) and the dashboard's token. Returns the files made;
/// nothing existing is touched.
pub fn complete(s: &Secrets) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for role in Role::ALL.into_iter().filter(|r| r.added_later()) {
        let (seed, public) = (s.seed(role), s.dir().join(format!("{role}.pub")));
        match (seed.is_file(), public.is_file()) {
            (true, true) => {}
            (false, false) => {
                user(s, role.name())?;
                made.extend([seed, public]);
            }
            // Half a user: made by hand, or cut short. Not guessed at.
            _ => bail!(
                "{} and {} must both exist or both be missing",
                seed.display(),
                public.display()
            ),
        }
    }
    if !s.dashboard_token().is_file() {
        dashboard_token(s)?;
        made.push(s.dashboard_token());
    }
    Ok(made)
}

/// A new nkey user `identity` (a role's or a tenant's name): its seed and its public key.
fn user(s: &Secrets, identity: &str) -> Result<()> {
    let kp = nkeys::KeyPair::new_user();
    let seed = kp
        .seed()
        .map_err(|e| anyhow::anyhow!("nkey seed for {identity}: {e}"))?;
    write(&s.seed_of(identity), &format!("{seed}\n"), true)?;
    write(
        &s.dir().join(format!("{identity}.pub")),
        &format!("{}\n", kp.public_key()),
        false,
    )
}

/// Adds tenant `tenant` to `dir`'s secrets: its nkey user, and `auth.conf` written again with it
/// (reload the servers afterwards). Refused when the tenant has one already.
pub fn add_tenant(dir: &Path, media: &str, tenant: &Tenant) -> Result<PathBuf> {
    let s = Secrets::open(dir)?;
    if s.tenant_seed(tenant).exists() {
        bail!(
            "tenant {tenant} already has credentials in {}",
            s.dir().display()
        );
    }
    user(&s, &subjects::tenant_identity(tenant))?;
    rewrite_auth(dir, media, false)
}

/// Public nkeys by identity: each role's, and each tenant's.
type PublicKeys = (Vec<(Role, String)>, Vec<(Tenant, String)>);

/// The public keys of `s`'s roles, and of every tenant it holds (`tenant-<name>.pub`).
fn public_keys(s: &Secrets) -> Result<PublicKeys> {
    let read = |identity: &str| -> Result<String> {
        let path = s.dir().join(format!("{identity}.pub"));
        let key = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned();
        if !key.starts_with('U') {
            bail!("{} holds no user public key", path.display());
        }
        Ok(key)
    };
    let mut users = Vec::new();
    for role in Role::ALL {
        if role.added_later() && !s.dir().join(format!("{role}.pub")).is_file() {
            continue;
        }
        users.push((role, read(role.name())?));
    }
    let mut tenants = Vec::new();
    for t in s.tenants()? {
        let key = read(&subjects::tenant_identity(&t))?;
        tenants.push((t, key));
    }
    Ok((users, tenants))
}

/// Writes `dir`'s `auth.conf` again from its public keys with this release's permissions
/// (`upgrade`: with an earlier release's grants beside them, for a rolling upgrade). Written in
/// place, not renamed over: compose mounts the file itself into the servers' containers, and a
/// new file behind the name would not reach them. The server reads it on a reload.
pub fn rewrite_auth(dir: &Path, media: &str, upgrade: bool) -> Result<PathBuf> {
    let s = Secrets::open(dir)?;
    let (users, tenants) = public_keys(&s)?;
    write_auth(&s, &users, &tenants, media, upgrade)
}

/// `rewrite_auth`, first adding what this release makes and `dir` lacks (`complete`): the
/// files it added, and `auth.conf`'s path.
pub fn upgrade_dir(dir: &Path, media: &str, upgrade: bool) -> Result<(Vec<PathBuf>, PathBuf)> {
    let s = Secrets::open(dir)?;
    let made = complete(&s)?;
    let (users, tenants) = public_keys(&s)?;
    Ok((made, write_auth(&s, &users, &tenants, media, upgrade)?))
}

fn write_auth(
    s: &Secrets,
    users: &[(Role, String)],
    tenants: &[(Tenant, String)],
    media: &str,
    upgrade: bool,
) -> Result<PathBuf> {
    let text = auth_conf::render_with(users, tenants, media, upgrade);
    let path = s.auth_conf();
    // The file is rewritten in place (see above), so a write cut short would leave half of it:
    // the previous one is kept beside it first.
    let backup = s.dir().join("auth.conf.previous");
    std::fs::copy(&path, &backup).with_context(|| format!("keeping {}", backup.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("rewriting {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

fn server_conf(s: &Secrets) -> String {
    format!(
        "# ffleet: TLS for every client (certificates verified against the CA) and one nkey\n\
         # user per role. Generated by `ffleet secrets init`; include it from a full config or\n\
         # pass it with -c (listen address, JetStream and store from the command line).\n\
         tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n\
         include ./auth.conf\n",
        s.server_cert().display(),
        s.server_key().display(),
        s.ca().display(),
    )
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(VALID_DAYS);
}

fn ca() -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>)> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "ffleet CA");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut p);
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok((cert, Issuer::new(p, key)))
}

/// A certificate signed by `issuer`; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    cn: &str,
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<(String, String)> {
    let mut p = CertificateParams::new(names)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = usages.to_vec();
    validity(&mut p);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a new file (never over an existing one); `secret` files get mode 0600.
fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
