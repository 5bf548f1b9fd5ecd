//! Shared pieces of the fuzz targets: the allocation bound, fixed keys, and
//! helpers that turn fuzzer bytes into the shapes the server receives.
//!
//! Every target starts with [`bound_allocations!`], which makes libFuzzer's
//! `-malloc_limit_mb` work without a sanitizer (see the macro).

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use temppass_token::{Jwks, SigningKey};

/// The seed of the one key that signs the seed tokens and statements (as in temppass-token's tests).
pub const KEY_SEED: [u8; 32] = [7; 32];

/// The time the seed media tokens were issued at, epoch seconds (their `iat`).
pub const NOW_SECS: i64 = 1_700_000_000;

pub static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_seed(KEY_SEED));

/// A key set holding the public half of [`KEY`] only.
pub static JWKS: LazyLock<Jwks> = LazyLock::new(|| Jwks { keys: vec![KEY.public_jwk()] });

static DALEK_KEY: LazyLock<ed25519_dalek::SigningKey> =
    LazyLock::new(|| ed25519_dalek::SigningKey::from_bytes(&KEY_SEED));

/// The signature [`KEY`] gives `signing_input`, Base64url: Ed25519 is deterministic, so a token verifies
/// against [`JWKS`] exactly when it ends with this.
pub fn signature_of(signing_input: &str) -> String {
    URL_SAFE_NO_PAD.encode(DALEK_KEY.sign(signing_input.as_bytes()).to_bytes())
}

/// Whether `compact` is `header.payload.signature` with the signature of [`KEY`] over `header.payload`.
pub fn signed_by_the_fixed_key(compact: &str) -> bool {
    compact.rsplit_once('.').is_some_and(|(signing_input, signature)| signature == signature_of(signing_input))
}

/// The request headers a server would see with this one header, or `None` when no HTTP/1 parser would
/// have let the bytes through as a header value (control characters other than tab).
pub fn one_header(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(name), value);
    Some(headers)
}

#[doc(hidden)]
pub mod allocator {
    //! libFuzzer stops on a single allocation over `-malloc_limit_mb`, but it
    //! learns about allocations only through the sanitizer hook
    //! `__sanitizer_install_malloc_and_free_hooks`. Stable Rust has no
    //! sanitizer, so the targets provide that function themselves and route
    //! every Rust allocation through [`Hooked`], which reports each one to
    //! libFuzzer: an oversized allocation then ends the run with
    //! `out-of-memory (malloc(N))` and an `oom-…` artifact, as under ASan.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub type MallocHook = extern "C" fn(*const u8, usize);
    pub type FreeHook = extern "C" fn(*const u8);

    static MALLOC_HOOK: AtomicUsize = AtomicUsize::new(0);
    static FREE_HOOK: AtomicUsize = AtomicUsize::new(0);

    /// Called by libFuzzer at start-up (through the macro's exported symbol).
    pub fn install(malloc_hook: Option<MallocHook>, free_hook: Option<FreeHook>) -> i32 {
        MALLOC_HOOK.store(malloc_hook.map_or(0, |f| f as usize), Ordering::Release);
        FREE_HOOK.store(free_hook.map_or(0, |f| f as usize), Ordering::Release);
        1
    }

    fn report_malloc(ptr: *mut u8, size: usize) {
        let hook = MALLOC_HOOK.load(Ordering::Acquire);
        if hook != 0 && !ptr.is_null() {
            // SAFETY: only `install` stores here, and only a `MallocHook`.
            let hook: MallocHook = unsafe { std::mem::transmute::<usize, MallocHook>(hook) };
            hook(ptr, size);
        }
    }

    fn report_free(ptr: *mut u8) {
        let hook = FREE_HOOK.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: only `install` stores here, and only a `FreeHook`.
            let hook: FreeHook = unsafe { std::mem::transmute::<usize, FreeHook>(hook) };
            hook(ptr);
        }
    }

    /// The system allocator, reporting to libFuzzer's hooks.
    pub struct Hooked;

    // SAFETY: every call is forwarded unchanged to `System`; the hooks only observe.
    unsafe impl GlobalAlloc for Hooked {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc(layout) };
            report_malloc(ptr, layout.size());
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc_zeroed(layout) };
            report_malloc(ptr, layout.size());
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            report_free(ptr);
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
            if !new_ptr.is_null() {
                report_free(ptr);
                report_malloc(new_ptr, new_size);
            }
            new_ptr
        }
    }
}

/// Routes every allocation of the target through libFuzzer's malloc hooks, so
/// `-malloc_limit_mb` bounds each single allocation (see [`allocator`]).
///
/// A macro rather than a library item: the symbol libFuzzer looks up is a weak
/// reference, which would not pull it out of a library archive.
#[macro_export]
macro_rules! bound_allocations {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Hooked = $crate::allocator::Hooked;

        #[unsafe(no_mangle)]
        pub extern "C" fn __sanitizer_install_malloc_and_free_hooks(
            malloc_hook: Option<$crate::allocator::MallocHook>,
            free_hook: Option<$crate::allocator::FreeHook>,
        ) -> i32 {
            $crate::allocator::install(malloc_hook, free_hook)
        }
    };
}
