//! JWT bearer tokens: verified against the operator's keys, their issuer,
//! audience and times checked, the user taken from a configured claim.
//!
//! ```toml
//! [jwt]
//! algorithm = "RS256"                    # HS256, RS256 or ES256 (and their 384/512 kin)
//! public_key = "auth.pem"                # RS/ES: a PEM public key, or
//! # jwks = "jwks.json"                   # a JWKS file, its keys picked by `kid`
//! # secret_env = "AGENTBOX_JWT_SECRET"   # HS: the environment variable holding the secret
//! issuer = "https://auth.example.com"
//! audience = "agentbox"
//! user_claim = "sub"                     # the claim that is the session's user id
//! plugins = ["*"]                        # the plugins token holders may use
//! leeway_s = 30                          # clock skew allowed on exp and nbf
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::names::check_user_id;
use crate::server::auth::principal::{Grant, Principal, Standing};

/// The `[jwt]` settings of `agentbox serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The algorithm tokens are signed with; any other is refused.
    pub algorithm: Algorithm,
    /// The environment variable holding an HMAC secret.
    pub secret_env: Option<String>,
    /// A PEM file of the RSA or EC public key.
    pub public_key: Option<PathBuf>,
    /// A JWKS file, whose keys are picked by the token's `kid`.
    pub jwks: Option<PathBuf>,
    /// The only `iss` accepted.
    pub issuer: String,
    /// The `aud` a token must name.
    pub audience: String,
    /// The claim holding the user id.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The plugins token holders may use: names, or `*` for every plugin.
    #[serde(default = "every_plugin")]
    pub plugins: Vec<String>,
    /// Seconds by which `exp` and `nbf` may be off.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_user_claim() -> String {
    "sub".into()
}

fn every_plugin() -> Vec<String> {
    vec!["*".into()]
}

fn default_leeway() -> u64 {
    30
}

/// Where a token's signature is checked.
#[derive(Debug)]
enum Keys {
    One(DecodingKey),
    Set(JwkSet),
}

/// Verifies tokens as [`JwtSettings`] say.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    user_claim: String,
    grant: Grant,
    leeway_ms: u64,
}

impl JwtVerifier {
    /// A verifier for `settings`, reading its key from the file or the
    /// environment variable they name.
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, String> {
        let family = settings.algorithm.family();
        let keys = match (&settings.secret_env, &settings.public_key, &settings.jwks) {
            (Some(var), None, None) if family == AlgorithmFamily::Hmac => {
                let secret = std::env::var(var)
                    .map_err(|_| format!("the environment variable `{var}` holds no secret"))?;
                if secret.len() < 32 {
                    return Err(format!(
                        "the secret in `{var}` is {} bytes; an HMAC secret needs at least 32",
                        secret.len()
                    ));
                }
                Keys::One(
                    DecodingKey::from_secret(secret.as_bytes())
                        .map_err(|err| format!("the secret in `{var}` is refused: {err}"))?,
                )
            }
            (None, Some(path), None) if family != AlgorithmFamily::Hmac => {
                let pem = std::fs::read(path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                let key = match family {
                    AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                    AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                };
                Keys::One(key.map_err(|err| {
                    format!(
                        "{} is not a {:?} public key in PEM: {err}",
                        path.display(),
                        settings.algorithm
                    )
                })?)
            }
            (None, None, Some(path)) if family != AlgorithmFamily::Hmac => {
                let text = std::fs::read_to_string(path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                Keys::Set(
                    serde_json::from_str(&text)
                        .map_err(|err| format!("{} is not a JWKS: {err}", path.display()))?,
                )
            }
            _ if family == AlgorithmFamily::Hmac => {
                return Err(format!(
                    "{:?} needs `secret_env` and neither `public_key` nor `jwks`",
                    settings.algorithm
                ));
            }
            _ => {
                return Err(format!(
                    "{:?} needs one of `public_key` and `jwks`, and no `secret_env`",
                    settings.algorithm
                ));
            }
        };
        let grant = Grant {
            plugins: settings.plugins.clone(),
            act_for_users: false,
            choose_ids: false,
        };
        grant.check()?;
        let mut validation = Validation::new(settings.algorithm);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Times are checked against the host's clock, below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(JwtVerifier {
            keys,
            validation,
            user_claim: settings.user_claim.clone(),
            grant,
            leeway_ms: settings.leeway_s.saturating_mul(1000),
        })
    }

    /// The principal `token` stands for at `now_ms`, or why it is refused.
    pub(crate) fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<Principal>, String> {
        let picked;
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::Set(set) => {
                let header = jsonwebtoken::decode_header(token).map_err(|err| refusal(&err))?;
                let kid = header.kid.ok_or("it names no `kid` to pick a key by")?;
                let jwk = set.find(&kid).ok_or_else(|| {
                    format!(
                        "it names key `{}`, which the JWKS lacks",
                        kid.escape_debug()
                    )
                })?;
                picked = DecodingKey::from_jwk(jwk)
                    .map_err(|err| format!("its key `{kid}` in the JWKS is unusable: {err}"))?;
                &picked
            }
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|err| refusal(&err))?
            .claims;
        let time = |claim: &str| -> Result<Option<u64>, String> {
            match claims.get(claim) {
                None => Ok(None),
                Some(value) => value
                    .as_u64()
                    .map(|seconds| Some(seconds.saturating_mul(1000)))
                    .ok_or_else(|| format!("its `{claim}` is not a time in seconds")),
            }
        };
        // `exp` is a required claim: the verification above refused a
        // token without one.
        let until_ms = time("exp")?.map_or(u64::MAX, |exp| exp.saturating_add(self.leeway_ms));
        if until_ms <= now_ms {
            return Err("it has expired".into());
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now_ms.saturating_add(self.leeway_ms)) {
            return Err("it is not valid yet".into());
        }
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("it has no `{}` claim naming its user", self.user_claim))?;
        check_user_id(user)
            .map_err(|reason| format!("its `{}` claim: {reason}", self.user_claim))?;
        Ok(Arc::new(Principal {
            owner: format!("jwt:{user}"),
            name: user.to_owned(),
            grant: self.grant.clone(),
            user: Some(user.to_owned()),
            standing: Standing::Token { until_ms },
        }))
    }
}

/// Why a token was refused, in words.
fn refusal(err: &jsonwebtoken::errors::Error) -> String {
    match err.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "it is not a well-formed JWT".into(),
        ErrorKind::InvalidSignature => "its signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => {
            "it is signed with another algorithm than the server's".into()
        }
        ErrorKind::InvalidIssuer => "its issuer is not the one the server trusts".into(),
        ErrorKind::InvalidAudience => "its audience is not this server".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no `{claim}` claim"),
        _ => format!("it does not verify: {err}"),
    }
}
