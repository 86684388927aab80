// The umbrella product most apps import: every module of the library.
@_exported import DynamicCore
@_exported import DynamicNN
@_exported import DynamicData
@_exported import Backbones
@_exported import EarlyExit
