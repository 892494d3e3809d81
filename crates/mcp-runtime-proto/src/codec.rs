//! The protobuf codec of every generated client and server: tonic-prost's, with the buffer
//! settings of the process ([`set_buffer_settings`]) instead of tonic's fixed defaults (8 KiB
//! buffers grown in 8 KiB steps, streaming batches of up to 32 KiB: `tonic::codec::BufferSettings`).
//! Until a process sets them, it behaves exactly as tonic-prost's own `ProstCodec`; the runtime
//! sets them from `--grpc-codec-buffer-size` so `make bench-grpc-settings` can measure them.

use std::marker::PhantomData;
use std::sync::OnceLock;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

static SETTINGS: OnceLock<BufferSettings> = OnceLock::new();

/// Sets the codec's buffer size (the first allocation of each message's buffer and the step it
/// grows by) and yield threshold (how many bytes of ready stream messages are batched into one
/// send), both in bytes, for every call of this process from now on.
///
/// # Errors
///
/// The settings already set, when they were (they can be set once per process).
pub fn set_buffer_settings(buffer_size: usize, yield_threshold: usize) -> Result<(), String> {
    SETTINGS
        .set(BufferSettings::new(buffer_size, yield_threshold))
        .map_err(|old| format!("codec buffer settings already set ({old:?})"))
}

fn settings() -> BufferSettings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// tonic-prost's codec with the process's buffer settings (the generated code's `codec_path`).
#[derive(Debug, Clone)]
pub struct BufferedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for BufferedCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for BufferedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
