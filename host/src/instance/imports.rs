//! The host's side of the imports every version of the world shares
//! (`session`, `kv`, `output`) and the types they use: one body, expanded in
//! each version's bindings module (`v0_1`, `v0_2`), whose
//! generated traits and types differ by name only.

/// Implements, in the invoking bindings module, the generated `session`,
/// `kv` and `output` host traits on [`crate::instance::ctx::WorldView`],
/// `add_to_linker` for them, and the conversions of the shared types (the
/// manifest's too; each version converts its own `tool-spec`). The items
/// given are the `session` functions only the invoking version has.
macro_rules! serve_shared_imports {
    ($($session_only:item)*) => {
        use wasmtime::component::{HasData, Linker, Resource};

        use crate::capability::bucket::Bucket;
        use crate::capability::error::GuestError;
        use crate::instance::ctx::{TurnCtx, WorldView};
        use crate::store::Role;
        use agentbox::plugin::types::{
            EndReason, Error as WitError, Manifest, Message, Outcome, Role as WitRole,
        };
        use agentbox::plugin::{kv, output, session};

        impl From<Manifest> for world::Manifest {
            fn from(manifest: Manifest) -> world::Manifest {
                world::Manifest {
                    name: manifest.name,
                    version: manifest.version,
                    description: manifest.description,
                    state_version: manifest.state_version,
                    state_schema: manifest.state_schema,
                    tools: manifest.tools.into_iter().map(Into::into).collect(),
                }
            }
        }

        struct HasWorld;

        impl HasData for HasWorld {
            type Data<'a> = WorldView<'a>;
        }

        /// Adds this version's `session`, `kv` and `output` to `linker`.
        pub(crate) fn add_to_linker(linker: &mut Linker<TurnCtx>) -> wasmtime::Result<()> {
            session::add_to_linker::<TurnCtx, HasWorld>(linker, TurnCtx::world)?;
            kv::add_to_linker::<TurnCtx, HasWorld>(linker, TurnCtx::world)?;
            output::add_to_linker::<TurnCtx, HasWorld>(linker, TurnCtx::world)?;
            Ok(())
        }

        impl From<GuestError> for WitError {
            fn from(err: GuestError) -> WitError {
                match err {
                    GuestError::Invalid(reason) => WitError::Invalid(reason),
                    GuestError::QuotaExceeded(reason) => WitError::QuotaExceeded(reason),
                    GuestError::Denied(reason) => WitError::Denied(reason),
                    GuestError::Unavailable(reason) => WitError::Unavailable(reason),
                }
            }
        }

        impl From<Outcome> for world::GuestOutcome {
            fn from(outcome: Outcome) -> world::GuestOutcome {
                match outcome {
                    Outcome::Continue => world::GuestOutcome::Continue,
                    Outcome::HandOff(target) => world::GuestOutcome::HandOff(target),
                    Outcome::End => world::GuestOutcome::End,
                }
            }
        }

        impl From<world::EndReason> for EndReason {
            fn from(reason: world::EndReason) -> EndReason {
                match reason {
                    world::EndReason::Caller => EndReason::Caller,
                    world::EndReason::Agent => EndReason::Agent,
                    world::EndReason::Expired => EndReason::Expired,
                }
            }
        }

        impl session::Host for WorldView<'_> {
            fn id(&mut self) -> wasmtime::Result<String> {
                Ok(self.session("id")?.id().to_owned())
            }

            fn user_id(&mut self) -> wasmtime::Result<Option<String>> {
                Ok(self.session("user-id")?.user_id().map(str::to_owned))
            }

            fn initial_variables(&mut self) -> wasmtime::Result<String> {
                Ok(self.session("initial-variables")?.initial_variables()?)
            }

            fn turn(&mut self) -> wasmtime::Result<u64> {
                Ok(self.session("turn")?.turn())
            }

            fn history(&mut self, last: Option<u32>) -> wasmtime::Result<Vec<Message>> {
                // A store failure is the host's fault, not the guest's: trap.
                let messages = self.session("history")?.history(last)?;
                Ok(messages
                    .into_iter()
                    .map(|message| Message {
                        role: match message.role {
                            Role::System => WitRole::System,
                            Role::User => WitRole::User,
                            Role::Assistant => WitRole::Assistant,
                            Role::Tool => WitRole::Tool,
                        },
                        content: message.content,
                    })
                    .collect())
            }

            fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                Ok(self.session("get")?.get(&key))
            }

            fn set(
                &mut self,
                key: String,
                value: String,
            ) -> wasmtime::Result<Result<(), WitError>> {
                Ok(self.session("set")?.set(key, &value).map_err(Into::into))
            }

            fn delete(&mut self, key: String) -> wasmtime::Result<()> {
                self.session("delete")?.delete(&key);
                Ok(())
            }

            fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
                Ok(self.session("keys")?.keys(&prefix))
            }

            $($session_only)*
        }

        impl output::Host for WorldView<'_> {
            fn say(&mut self, text: String) -> wasmtime::Result<()> {
                Ok(self.output("say")?.say(text)?)
            }
        }

        impl kv::Host for WorldView<'_> {
            fn open(
                &mut self,
                name: String,
            ) -> wasmtime::Result<Result<Resource<Bucket>, WitError>> {
                let kv = self.kv("open")?;
                match kv.open(name) {
                    Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
                    Err(err) => Ok(Err(err.into())),
                }
            }
        }

        impl kv::HostBucket for WorldView<'_> {
            fn get(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
            ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.get")?;
                Ok(kv.get(bucket, &key).map_err(Into::into))
            }

            fn set(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
                value: Vec<u8>,
                ttl_ms: Option<u64>,
            ) -> wasmtime::Result<Result<(), WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.set")?;
                Ok(kv
                    .put(bucket, &key, &value, ttl_ms, None)
                    .map(drop)
                    .map_err(Into::into))
            }

            fn delete(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
            ) -> wasmtime::Result<Result<(), WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.delete")?;
                Ok(kv.delete(bucket, &key).map_err(Into::into))
            }

            fn exists(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
            ) -> wasmtime::Result<Result<bool, WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.get")?;
                Ok(kv
                    .get(bucket, &key)
                    .map(|value| value.is_some())
                    .map_err(Into::into))
            }

            fn list_keys(
                &mut self,
                bucket: Resource<Bucket>,
                prefix: String,
                cursor: Option<String>,
            ) -> wasmtime::Result<Result<kv::KeyPage, WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.list-keys")?;
                Ok(kv
                    .list_keys(bucket, &prefix, cursor.as_deref())
                    .map(|page| kv::KeyPage {
                        keys: page.keys,
                        cursor: page.cursor,
                    })
                    .map_err(Into::into))
            }

            fn compare_and_swap(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
                expected: Option<Vec<u8>>,
                value: Vec<u8>,
                ttl_ms: Option<u64>,
            ) -> wasmtime::Result<Result<bool, WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.compare-and-swap")?;
                Ok(kv
                    .put(bucket, &key, &value, ttl_ms, Some(expected.as_deref()))
                    .map_err(Into::into))
            }

            fn increment(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
                delta: i64,
            ) -> wasmtime::Result<Result<i64, WitError>> {
                let (kv, bucket) = self.bucket(&bucket, "bucket.increment")?;
                Ok(kv.increment(bucket, &key, delta).map_err(Into::into))
            }

            fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
                self.table.delete(bucket)?;
                self.close_bucket();
                Ok(())
            }
        }
    };
}

pub(super) use serve_shared_imports;
