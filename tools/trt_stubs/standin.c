/*
 * Stand-in TensorRT native libraries, for type-checking only.
 *
 * The TensorRT Python bindings (tensorrt-cuXX-bindings wheels) link against libnvinfer, libnvonnxparser and
 * libnvinfer_plugin. Machines without TensorRT (CI, laptops) cannot import them, so pybind11-stubgen cannot
 * read the real API. These stand-ins define the entry points the bindings resolve (list them with
 * `nm -D --undefined-only tensorrt.so`) so that the module imports and its classes can be introspected.
 * Nothing here builds or runs an engine: every factory returns NULL, which the bindings report as a failure
 * if anything tries to use it.
 *
 * One source, three libraries: compile with exactly one of -DSTANDIN_NVINFER, -DSTANDIN_NVONNXPARSER,
 * -DSTANDIN_NVINFER_PLUGIN (contract_env.py does that). The signatures take the C ABI view of the real ones (pointers
 * and ints); the bindings never call them during import.
 */
#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

#if defined(STANDIN_NVINFER)

EXPORT void *createInferBuilder_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
EXPORT void *createInferRuntime_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
EXPORT void *createInferRefitter_INTERNAL(void *engine, void *logger, int32_t version)
{
    (void)engine; (void)logger; (void)version;
    return NULL;
}
EXPORT void *getPluginRegistry(void) { return NULL; }
EXPORT void *getBuilderPluginRegistry(int32_t capability) { (void)capability; return NULL; }
EXPORT void *getLogger(void) { return NULL; }
EXPORT int32_t getInferLibVersion(void) { return 0; }

#elif defined(STANDIN_NVONNXPARSER)

EXPORT void *createNvOnnxParser_INTERNAL(void *network, void *logger, int32_t version)
{
    (void)network; (void)logger; (void)version;
    return NULL;
}
EXPORT void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int32_t version)
{
    (void)refitter; (void)logger; (void)version;
    return NULL;
}
EXPORT int getNvOnnxParserVersion(void) { return 0; }

#elif defined(STANDIN_NVINFER_PLUGIN)

EXPORT int initLibNvInferPlugins(void *logger, const char *lib_namespace)
{
    (void)logger; (void)lib_namespace;
    return 0;
}

#else
#error "define one of STANDIN_NVINFER, STANDIN_NVONNXPARSER, STANDIN_NVINFER_PLUGIN"
#endif
